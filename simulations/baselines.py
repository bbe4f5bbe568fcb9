"""Non-federated baselines on the same split, model and training loop as the federation.

Local-only: each site trains alone. Pooled: one model on all sites' training rows (what a
central data lake would give). Both are evaluated on every site's test set, so a user sees
what federation bought them. Each trains for ``rounds * local_epochs`` epochs, the federated
model's epoch budget.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from fedcare.config import RunConfig
from fedcare.metrics import BinaryMetrics
from fedcare.tasks import SiteData, Task
from fedcare.training import LocalTrainingPlan, evaluate, train_local


@dataclass(frozen=True)
class BaselineResult:
    """One baseline model's metrics on each site's test set."""

    sites: dict[str, BinaryMetrics]

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean([m.accuracy for m in self.sites.values()]))


def _plan(config: RunConfig, label: str) -> LocalTrainingPlan:
    return LocalTrainingPlan(
        epochs=config.rounds * config.local_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=zlib.crc32(f"{config.seed}:baseline:{label}".encode()),
    )


def _train_and_score(
    task: Task, config: RunConfig, label: str, x: np.ndarray, y: np.ndarray, sites: list[SiteData]
) -> BaselineResult:
    torch.set_num_threads(1)
    model = task.build_model(config.model, seed=config.seed)
    train_local(model, task.loss(), x, y, _plan(config, label))
    return BaselineResult(
        sites={s.site: evaluate(model, task.loss(), s.x_test, s.y_test) for s in sites}
    )


def local_baselines(
    task: Task, config: RunConfig, sites: list[SiteData]
) -> dict[str, BaselineResult]:
    """For each site, a model trained on that site alone, scored at every site."""
    return {
        s.site: _train_and_score(task, config, f"local:{s.site}", s.x_train, s.y_train, sites)
        for s in sites
    }


def pooled_baseline(task: Task, config: RunConfig, sites: list[SiteData]) -> BaselineResult:
    """One model on the union of all sites' (each site-standardised) training rows."""
    x = np.concatenate([s.x_train for s in sites])
    y = np.concatenate([s.y_train for s in sites])
    return _train_and_score(task, config, "pooled", x, y, sites)
