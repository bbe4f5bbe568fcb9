"""Clinical tasks fedcare can federate, looked up by name."""

from __future__ import annotations

from fedcare.errors import ConfigError
from fedcare.tasks.base import ModelName, SiteData, Task
from fedcare.tasks.heart_disease import HeartDiseaseTask

_TASKS: dict[str, Task] = {HeartDiseaseTask.name: HeartDiseaseTask()}


def task_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_task`."""
    return tuple(sorted(_TASKS))


def get_task(name: str) -> Task:
    """The task called ``name``; a clear error lists the known ones."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ConfigError(
            f"unknown task {name!r}; choose one of: {', '.join(task_names())}"
        ) from None


__all__ = ["ModelName", "SiteData", "Task", "get_task", "task_names"]
