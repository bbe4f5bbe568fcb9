"""DP-SGD for one site's local training, with Opacus: per-sample clipping, Gaussian noise,
Poisson sampling.

Randomness: Opacus' ``secure_mode`` needs ``torchcsprng``, which is not available, so the
Poisson sampler and the noise each get a fresh ``torch.Generator`` seeded from 64 bits of OS
entropy (``os.urandom``) every round. They are not cryptographically secure generators; the
threat model in README says what that means.

Each call wraps a fresh model and removes Opacus' hooks afterwards, so privatising round after
round neither stacks hooks ("Trying to add hooks twice") nor keeps per-sample gradients alive.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import TensorDataset

from fedcare.tasks.base import FloatArray

# Documented above and in README's threat model; repeating it every round helps nobody.
warnings.filterwarnings("ignore", message="Secure RNG turned off", module="opacus")


class GradSampleMode(StrEnum):
    """Opacus' per-sample gradient engines (see ``fedcare bench dp`` for their cost)."""

    HOOKS = "hooks"
    EW = "ew"
    FUNCTORCH = "functorch"
    GHOST = "ghost"


class BatchLoading(StrEnum):
    """How Poisson-sampled batches are materialised.

    ``indexed`` takes the index sets from Opacus' own Poisson sampler and slices the tensors in
    one operation; ``collated`` iterates Opacus' ``DPDataLoader``, which collates row by row.
    Both sample identically; ``fedcare bench dp`` measures the difference.
    """

    INDEXED = "indexed"
    COLLATED = "collated"


@dataclass(frozen=True)
class DpSgdSettings:
    """The DP-SGD mechanism of one round at one site."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    epochs: int
    learning_rate: float
    grad_sample_mode: GradSampleMode = GradSampleMode.EW  # fastest here: see README
    batch_loading: BatchLoading = BatchLoading.INDEXED


@dataclass(frozen=True)
class DpSgdResult:
    """What a DP-SGD round did: the ledger needs ``steps``.

    No training loss: it is an exact, un-noised mean over the records, so it is neither kept
    nor sent (README, Differential privacy); only the noised weights leave DP-SGD.
    """

    steps: int


def entropy_generator() -> torch.Generator:
    """A generator seeded from the OS's entropy pool (see module docstring)."""
    seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    return torch.Generator().manual_seed(seed)


def _batches(
    loader: DPDataLoader, features: torch.Tensor, labels: torch.Tensor, loading: BatchLoading
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if loading is BatchLoading.COLLATED:
        yield from loader
        return
    for indices in loader.batch_sampler:
        index = torch.as_tensor(indices, dtype=torch.long)
        yield features[index], labels[index]


def train_dp_sgd(
    model: nn.Module, loss_fn: nn.Module, x: FloatArray, y: FloatArray, settings: DpSgdSettings
) -> DpSgdResult:
    """Train ``model`` in place with DP-SGD; returns the steps taken."""
    features = torch.from_numpy(np.ascontiguousarray(x))
    # One label and one logit per record, so the loss per record has shape (B,): Opacus' ghost
    # clipping scales that by each record's clipping coefficient, and a (B, 1) loss would be
    # broadcast to (B, B), scaling every record by the sum of all coefficients (no clipping).
    labels = torch.from_numpy(np.ascontiguousarray(y)).reshape(-1)
    loader = DPDataLoader(
        TensorDataset(features, labels),
        sample_rate=settings.sample_rate,
        generator=entropy_generator(),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.learning_rate)
    engine = PrivacyEngine(accountant="rdp")
    ghost = settings.grad_sample_mode is GradSampleMode.GHOST
    private = engine.make_private(
        module=model,
        optimizer=optimizer,
        criterion=loss_fn,
        data_loader=loader,
        noise_multiplier=settings.noise_multiplier,
        max_grad_norm=settings.max_grad_norm,
        poisson_sampling=False,  # ``loader`` already samples with the recorded rate
        noise_generator=entropy_generator(),
        grad_sample_mode=str(settings.grad_sample_mode),
    )
    private_model, dp_optimizer = private[0], private[1]
    criterion = private[2] if ghost else loss_fn
    steps = 0
    try:
        private_model.train()
        for _ in range(settings.epochs):
            for batch_x, batch_y in _batches(loader, features, labels, settings.batch_loading):
                dp_optimizer.zero_grad(set_to_none=True)
                if batch_x.shape[0]:
                    criterion(private_model(batch_x).reshape(-1), batch_y).backward()
                else:  # an empty Poisson batch still releases a noisy step: no per-sample
                    # gradients (some grad-sample modes refuse a batch of 0), noise only
                    for parameter in model.parameters():
                        if parameter.requires_grad:
                            parameter.grad_sample = torch.zeros((0, *parameter.shape))
                            parameter.grad = torch.zeros_like(parameter)  # ghost clipping
                dp_optimizer.step()
                steps += 1
    finally:
        private_model._close()
    return DpSgdResult(steps=steps)
