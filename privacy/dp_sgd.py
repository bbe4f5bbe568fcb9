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
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import TensorDataset

from fedcare.tasks.base import FloatArray


class GradSampleMode(StrEnum):
    """Opacus' per-sample gradient engines (see ``fedcare bench dp`` for their cost)."""

    HOOKS = "hooks"
    EW = "ew"
    FUNCTORCH = "functorch"


@dataclass(frozen=True)
class DpSgdSettings:
    """The DP-SGD mechanism of one round at one site."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    epochs: int
    learning_rate: float
    grad_sample_mode: GradSampleMode = GradSampleMode.HOOKS


@dataclass(frozen=True)
class DpSgdResult:
    """What a DP-SGD round did: the ledger needs ``steps``, the report ``loss``."""

    loss: float
    steps: int


def entropy_generator() -> torch.Generator:
    """A generator seeded from the OS's entropy pool (see module docstring)."""
    seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    return torch.Generator().manual_seed(seed)


def train_dp_sgd(
    model: nn.Module, loss_fn: nn.Module, x: FloatArray, y: FloatArray, settings: DpSgdSettings
) -> DpSgdResult:
    """Train ``model`` in place with DP-SGD; returns the mean loss and the steps taken."""
    dataset = TensorDataset(
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(np.ascontiguousarray(y)).reshape(-1, 1),
    )
    loader = DPDataLoader(dataset, sample_rate=settings.sample_rate, generator=entropy_generator())
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.learning_rate)
    engine = PrivacyEngine(accountant="rdp")
    private_model, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=settings.noise_multiplier,
        max_grad_norm=settings.max_grad_norm,
        poisson_sampling=False,  # ``loader`` already samples with the recorded rate
        noise_generator=entropy_generator(),
        grad_sample_mode=str(settings.grad_sample_mode),
    )
    steps, total, seen = 0, 0.0, 0
    try:
        private_model.train()
        for _ in range(settings.epochs):
            for features, labels in dp_loader:
                dp_optimizer.zero_grad(set_to_none=True)
                if features.shape[0]:
                    loss = loss_fn(private_model(features), labels)
                    total += float(loss.detach()) * features.shape[0]
                    seen += features.shape[0]
                else:  # an empty Poisson batch still releases a noisy step
                    loss = private_model(features).sum()
                loss.backward()
                dp_optimizer.step()
                steps += 1
    finally:
        private_model._close()
    return DpSgdResult(loss=total / max(seen, 1), steps=steps)
