"""The site's own policy: its privacy budget, δ, whether it trains without DP, whether it
sends an update only under secure aggregation, and which extra columns of its export the data
gate may ignore.

Set by the site (node config in deployment, the scenario in simulation), never by the
coordinator. Defaults are the conservative ones: DP required, budget ε = 10.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from fedcare.errors import ConfigError

DEFAULT_MAX_EPSILON = 10.0
# A column name travels in the node config as part of a comma-separated, double-quoted value.
_IGNORABLE_NAME = re.compile(r'^[^"\'\s=\\,]+$')


@dataclass(frozen=True)
class SitePolicy:
    """A site's privacy policy (see module docstring)."""

    max_epsilon: float = DEFAULT_MAX_EPSILON
    delta: float | None = None  # None: fedcare.privacy.accounting.default_delta(n_train)
    require_dp: bool = True
    require_secure_aggregation: bool = False  # True: never send an update the coordinator can read
    # Undeclared columns the data gate lets through (never read; still identifier-checked).
    ignore_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.max_epsilon, int | float) and self.max_epsilon > 0):
            raise ConfigError(f"site policy: max-epsilon {self.max_epsilon!r} must be > 0")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ConfigError(f"site policy: delta {self.delta!r} must be in (0, 1)")
        if math.isnan(self.max_epsilon):
            raise ConfigError("site policy: max-epsilon must be a number")
        for column in self.ignore_columns:
            if not _IGNORABLE_NAME.match(column):
                raise ConfigError(
                    f"site policy: ignore column {column!r} may not be empty or contain spaces, "
                    "quotes, commas, '=' or backslashes; rename it in the export or remove it"
                )

    def to_mapping(self) -> dict[str, float | str]:
        """The node-config form read back by :meth:`from_mapping` (0 = default δ; the ignore
        list comma-separated, and absent when empty since node-config strings may not be)."""
        mapping: dict[str, float | str] = {
            "max-epsilon": self.max_epsilon,
            "delta": self.delta or 0.0,
            "require-dp": str(self.require_dp).lower(),
            "require-secure-aggregation": str(self.require_secure_aggregation).lower(),
        }
        if self.ignore_columns:
            mapping["ignore-columns"] = ",".join(self.ignore_columns)
        return mapping

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SitePolicy:
        """From node config / scenario keys ``max-epsilon``, ``delta``, ``require-dp``,
        ``require-secure-aggregation``, ``ignore-columns`` (comma-separated)."""
        delta = values.get("delta")
        return cls(
            max_epsilon=float(values.get("max-epsilon", DEFAULT_MAX_EPSILON)),
            delta=None if delta in (None, "", 0, 0.0) else float(delta),
            require_dp=_flag(values.get("require-dp", "true")),
            require_secure_aggregation=_flag(values.get("require-secure-aggregation", "false")),
            ignore_columns=tuple(
                c.strip() for c in str(values.get("ignore-columns", "")).split(",") if c.strip()
            ),
        )


def _flag(value: Any) -> bool:
    return str(value).lower() in ("true", "1")
