"""Clinical tasks fedcare can federate, looked up by name.

The task classes (and torch, scikit-learn behind them) are imported on first use, not when
``fedcare`` is imported: every CLI command and every Flower process imports ``fedcare.config``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fedcare.errors import ConfigError
from fedcare.tasks.names import TASK_CLASSES, ModelName, task_names

if TYPE_CHECKING:
    from fedcare.tasks.base import SiteData, Task

_LOADED: dict[str, Task] = {}


def require_task(name: str) -> str:
    """``name`` if it names a known task; else a clear error that lists the known ones."""
    if name not in TASK_CLASSES:
        raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(task_names())}")
    return name


def get_task(name: str) -> Task:
    """The task called ``name`` (one instance per process); a clear error lists the known ones."""
    if name not in _LOADED:
        module, _, cls = TASK_CLASSES[require_task(name)].partition(":")
        _LOADED[name] = getattr(importlib.import_module(module), cls)()
    return _LOADED[name]


def __getattr__(name: str) -> Any:
    """``SiteData`` and ``Task`` from :mod:`fedcare.tasks.base`, imported when first named."""
    if name in ("SiteData", "Task"):
        from fedcare.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ModelName", "SiteData", "Task", "get_task", "require_task", "task_names"]
