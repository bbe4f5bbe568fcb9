"""Names a run configuration refers to, importable without torch or scikit-learn.

``fedcare.config`` validates a run's task and model names at every CLI start-up, so this module
only reads names. A task is found through the ``fedcare.tasks`` entry-point group of the installed
distributions (fedcare's own tasks are declared in its ``pyproject.toml`` the same way as any
task plugin's): reading that metadata costs a few milliseconds and imports nothing, whereas the
task classes behind it import torch. :func:`fedcare.tasks.get_task` imports a task when it is used.

Only what is installed in the site's own environment is found: a task cannot arrive over the
wire, and a package that claims another package's task name is refused rather than picked.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata

from fedcare.errors import ConfigError

ENTRY_POINT_GROUP = "fedcare.tasks"
# What every "no such task" message ends with: how a task gets installed.
INSTALL_HINT = (
    f"a task is a package declaring a {ENTRY_POINT_GROUP!r} entry point; install it in this "
    "environment (README, 'Task plugins')"
)


class ModelName(StrEnum):
    """Model architectures every task offers; all are Opacus-compatible (no BatchNorm)."""

    LOGREG = "logreg"
    MLP = "mlp"


@dataclass(frozen=True)
class TaskEntry:
    """One task as an installed distribution declares it: ``name = "module:Class"``."""

    name: str
    value: str  # "module:Class", the entry point's object reference
    distribution: str  # "name version" of the distribution declaring it

    @property
    def module(self) -> str:
        """The module the entry point names (the task's schema and encoder live there)."""
        return self.value.partition(":")[0].strip()

    def describe(self) -> str:
        """How messages name this entry: where it comes from and what it points at."""
        return f"{self.name} = {self.value!r} from {self.distribution}"


def _distribution(point: metadata.EntryPoint) -> str:
    dist = point.dist
    if dist is None:  # an EntryPoint made by hand rather than read from a distribution
        return "an unknown distribution"
    return f"{dist.name} {dist.version}"


@functools.cache
def installed_tasks() -> dict[str, tuple[TaskEntry, ...]]:
    """Task name -> every installed entry declaring it (two or more: a conflict).

    Read once per process: a long-running site picks up a newly installed task on restart,
    which is when its operator approves it (README, 'Task plugins').
    """
    found: dict[str, list[TaskEntry]] = {}
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry = TaskEntry(point.name, point.value, _distribution(point))
        if entry not in found.setdefault(point.name, []):
            found[point.name].append(entry)
    return {name: tuple(entries) for name, entries in found.items()}


def forget_installed_tasks() -> None:
    """Read the entry points again on next use (after a test installs or removes a task)."""
    installed_tasks.cache_clear()


def task_names() -> tuple[str, ...]:
    """Names accepted by :func:`fedcare.tasks.get_task`, sorted."""
    return tuple(sorted(installed_tasks()))


def task_entry(name: str) -> TaskEntry:
    """The one installed entry for task ``name``; a one-line :class:`ConfigError` when no
    distribution declares it, or when two do (which one runs must not depend on install order)."""
    entries = installed_tasks().get(name, ())
    if not entries:
        known = ", ".join(task_names()) or "none"
        raise ConfigError(f"unknown task {name!r}; installed tasks: {known}; {INSTALL_HINT}")
    if len(entries) > 1:
        raise ConfigError(
            f"task {name!r} is declared by {len(entries)} installed distributions: "
            f"{'; '.join(e.describe() for e in entries)}; uninstall all but the one this site "
            "approved"
        )
    return entries[0]


def __getattr__(name: str) -> dict[str, str]:
    """``TASK_CLASSES``: task name -> "module:Class" of every unambiguous installed task.

    The old static registry's name, computed from the entry points; kept for callers that only
    want the modules to import ahead (the site's warm worker)."""
    if name == "TASK_CLASSES":
        return {n: e[0].value for n, e in sorted(installed_tasks().items()) if len(e) == 1}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
