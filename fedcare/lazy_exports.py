"""Package facades that import their members on first use.

Every ``fedcare`` CLI command, SuperNode helper and app process imports some ``fedcare.*``
package; a facade that imported its members eagerly would load torch, Opacus and Flower for a
command that only reads a log (seconds of CPU each time). A package lists its public names
here once, as ``{name: module}``, and each is imported when first touched.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``exports[name]`` on use."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(importlib.import_module(package), name, value)  # later lookups are direct
        return value

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(globals()))

    return __getattr__, __dir__
