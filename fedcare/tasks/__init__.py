"""Clinical tasks fedcare can federate, looked up by name among the installed task packages.

Tasks are found through the ``fedcare.tasks`` entry-point group (:mod:`fedcare.tasks.names`).
The task classes (and torch, scikit-learn behind them) are imported on first use, not when
``fedcare`` is imported: every CLI command and every Flower process imports ``fedcare.config``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fedcare.errors import ConfigError
from fedcare.tasks.names import ModelName, TaskEntry, task_entry, task_names

if TYPE_CHECKING:
    from fedcare.tasks.base import SiteData, Task

_LOADED: dict[str, Task] = {}
# What to do about a task package that does not load or does not fit the interface.
_FIX = "reinstall or fix that package, or uninstall it"


def require_task(name: str) -> str:
    """``name`` if exactly one installed package declares it; else a one-line error (the
    installed tasks, or the two packages that claim the name)."""
    task_entry(name)
    return name


def get_task(name: str) -> Task:
    """The task called ``name`` (one instance per process), from the package that declares it.

    A plugin that fails to import, or whose object is not a task called ``name``, is a
    one-line :class:`ConfigError` naming the task, its entry point and the fix."""
    if name not in _LOADED:
        _LOADED[name] = _instantiate(task_entry(name))
    return _LOADED[name]


def task_module(name: str) -> ModuleType:
    """The module task ``name``'s entry point names: where a release bundle reads the task's
    raw inputs and encoder (``MODEL_INPUTS``, ``INPUT_RULES``, ``FEATURE_NAMES``,
    ``encode_inputs``; :mod:`fedcare.bundle`)."""
    entry = task_entry(name)
    try:
        return importlib.import_module(entry.module)
    except Exception as exc:  # a plugin's import can fail in any way; name it, then the fix
        raise _broken(entry, exc) from exc


def _instantiate(entry: TaskEntry) -> Task:
    module = task_module(entry.name)
    try:
        target: Any = module
        for attribute in entry.value.partition(":")[2].strip().split("."):
            target = getattr(target, attribute)
        task: Task = target()
    except Exception as exc:  # as above: the class may be missing or fail to construct
        raise _broken(entry, exc) from exc
    _check_interface(entry, task)
    return task


def _check_interface(entry: TaskEntry, task: object) -> None:
    """Every member of :class:`fedcare.tasks.base.Task` present, and the task's own name the
    one it is registered under; all missing members named at once."""
    from fedcare.tasks.base import Task

    declared = {*Task.__annotations__, *(n for n, v in vars(Task).items() if callable(v))}
    members = sorted(n for n in declared if not n.startswith("_"))
    missing = [m for m in members if not hasattr(task, m)]
    if missing:
        raise ConfigError(
            f"task {entry.name!r} ({entry.describe()}) lacks {', '.join(missing)} of the Task "
            f"interface (fedcare.tasks.base.Task); {_FIX}"
        )
    if getattr(task, "name", None) != entry.name:
        raise ConfigError(
            f"task {entry.name!r} ({entry.describe()}) calls itself "
            f"{getattr(task, 'name', None)!r}; the entry point's name and the task's name must "
            f"match; {_FIX}"
        )


def _broken(entry: TaskEntry, exc: Exception) -> ConfigError:
    return ConfigError(
        f"task {entry.name!r}: its plugin failed to load ({entry.describe()}): "
        f"{type(exc).__name__}: {' '.join(str(exc).split())}; {_FIX}"
    )


def __getattr__(name: str) -> Any:
    """``SiteData`` and ``Task`` from :mod:`fedcare.tasks.base`, imported when first named."""
    if name in ("SiteData", "Task"):
        from fedcare.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ModelName",
    "SiteData",
    "Task",
    "get_task",
    "require_task",
    "task_module",
    "task_names",
]
