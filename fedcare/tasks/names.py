"""Names a run configuration refers to, importable without torch or scikit-learn.

``fedcare.config`` validates a run's task and model names at every CLI start-up; keeping the
names here (and the task classes behind a lazy registry in ``fedcare.tasks``) means a command
such as ``fedcare site audit`` never pays for importing torch.
"""

from __future__ import annotations

from enum import StrEnum


class ModelName(StrEnum):
    """Model architectures every task offers; all are Opacus-compatible (no BatchNorm)."""

    LOGREG = "logreg"
    MLP = "mlp"


# Task name -> "module:class"; the module is imported only when the task is used.
TASK_CLASSES: dict[str, str] = {"heart-disease": "fedcare.tasks.heart_disease:HeartDiseaseTask"}


def task_names() -> tuple[str, ...]:
    """Names accepted by :func:`fedcare.tasks.get_task`."""
    return tuple(sorted(TASK_CLASSES))
