"""Plain, seeded PyTorch training of a discrete-time survival model (the baselines' learner).

Full-batch Adam for a fixed number of epochs: a site holds at most ~160 training patients, so
one batch is the whole set and the result depends on the seed alone (no shuffling, no early
stopping on rows that a fair comparison would need to hold out). The federated path trains
through fedcare's own round loop later; this is the non-federated reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from fedcare.errors import ConfigError
from fedcare.tasks.names import ModelName
from fedcare.tasks.ncctg_lung.model import DiscreteHazardNLL, build_model
from fedcare.tasks.ncctg_lung.preprocess import Float32Array


@dataclass(frozen=True)
class TrainConfig:
    """How a baseline model is trained; validated on construction."""

    model: ModelName = ModelName.LOGREG
    epochs: int = 500
    learning_rate: float = 0.01
    weight_decay: float = 1e-3  # L2: a site may have only 22 training patients
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs {self.epochs} (at least 1)")
        if not self.learning_rate > 0.0:
            problems.append(f"learning_rate {self.learning_rate} (above 0)")
        if not self.weight_decay >= 0.0:
            problems.append(f"weight_decay {self.weight_decay} (0 or above)")
        if problems:
            raise ConfigError(f"survival training config: {'; '.join(problems)}")


@contextmanager
def single_thread() -> Iterator[None]:
    """torch on one thread while inside, as before afterwards: for models this small, threads
    cost more than they give (measured: 300 full-batch steps, 1.0 s on one thread, 16 s on two
    of a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_model(x: Float32Array, targets: Float32Array, config: TrainConfig) -> nn.Module:
    """A model trained on all of ``(x, targets)`` (targets from ``discretise``)."""
    model = build_model(config.model, config.seed)
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    loss_fn = DiscreteHazardNLL(reduction="mean")
    inputs, labels = torch.from_numpy(x), torch.from_numpy(targets)
    model.train()
    with single_thread():
        for _ in range(config.epochs):
            optimiser.zero_grad()
            loss = loss_fn(model(inputs), labels)
            loss.backward()
            optimiser.step()
    model.eval()
    return model
