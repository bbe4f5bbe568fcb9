"""The release gate: a version is released only when every criterion holds at every site.

The owner writes the policy once (TOML, ``[gate]`` table); every key is optional and an absent
key checks nothing::

    [gate]
    min-sites = 3                  # sites that validated (reported their whole test set)
    min-auroc = 0.70               # each site's AUROC (point estimate)
    min-auroc-ci-low = 0.60        # each site's lower 95 % bound
    calibration-slope = [0.6, 1.4] # each site's calibration slope within this range
    max-ece = 0.15                 # each site's expected calibration error
    max-epsilon = 10.0             # each contributing site's ε (a non-private site counts as ∞)
    max-subgroup-auroc-gap = 0.25  # within a site, largest minus smallest AUROC of one grouping

Judged on the version's latest validation and its privacy record; the verdict lists every
failed criterion with its site, the measured value and the limit, so an owner sees all that
stands between the model and a release at once, not one reason per attempt.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeGuard

from fedcare import messages as keys
from fedcare.errors import ConfigError

FEDERATION = "federation"  # the "site" of a criterion about the whole federation


@dataclass(frozen=True)
class GatePolicy:
    """See module docstring; ``None`` = not checked."""

    min_sites: int | None = None
    min_auroc: float | None = None
    min_auroc_ci_low: float | None = None
    calibration_slope: tuple[float, float] | None = None
    max_ece: float | None = None
    max_epsilon: float | None = None
    max_subgroup_auroc_gap: float | None = None

    @classmethod
    def load(cls, path: Path) -> GatePolicy:
        """Read ``path``; unknown keys and wrong types are refused naming the key."""
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8")).get("gate")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the gate policy ({exc})") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: no [gate] table; see the README's release gate section")
        return cls.from_mapping(table, str(path))

    @classmethod
    def from_mapping(cls, table: dict[str, Any], where: str = "gate policy") -> GatePolicy:
        known = {f.name.replace("_", "-"): f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{where}: unknown key {key!r}; known: {', '.join(known)}")
            values[known[key]] = _checked(where, key, value)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {
            f.name.replace("_", "-"): (
                list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            )
            for f in fields(self)
            if getattr(self, f.name) is not None
        }


def _checked(where: str, key: str, value: Any) -> Any:
    if key == "calibration-slope":
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(_number(v) for v in value)
            or value[0] > value[1]
        ):
            raise ConfigError(f"{where}: {key} = {value!r} must be [low, high] with low <= high")
        return (float(value[0]), float(value[1]))
    if key == "min-sites":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: {key} = {value!r} must be an integer >= 1")
        return value
    if not _number(value) or value < 0:
        raise ConfigError(f"{where}: {key} = {value!r} must be a number >= 0")
    return float(value)


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Failure:
    """One criterion that does not hold."""

    site: str
    criterion: str
    measured: float | None  # None: not measured (a missing value fails, never passes)
    limit: str

    def __str__(self) -> str:
        measured = "not measured" if self.measured is None else f"{self.measured:.4g}"
        return f"{self.site}: {self.criterion} = {measured}, limit {self.limit}"


def _value(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if _number(value) else None


def _subgroup_gaps(cells: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Largest minus smallest AUROC among a grouping's reported cells (``sex=...``), per
    grouping; a suppressed cell was never sent, so it cannot count."""
    by_grouping: dict[str, list[float]] = {}
    for cell, metrics in cells.items():
        value = _value(metrics, keys.AUROC)
        if cell == keys.OVERALL_CELL or value is None:
            continue
        by_grouping.setdefault(cell.split("=", 1)[0], []).append(value)
    return {g: max(v) - min(v) for g, v in sorted(by_grouping.items()) if len(v) >= 2}


def validated_sites(replied: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The sites that reported their whole test set. A site whose test set is under its
    minimum cell (too few patients, events or non-events) sends no overall cell: it did not
    validate the model, and counts towards no criterion (the model card names it)."""
    return {site: cells for site, cells in replied.items() if keys.OVERALL_CELL in cells}


def contributors(view: dict[str, Any]) -> list[str]:
    """The sites whose update went into at least one round of the version's training."""
    return sorted({site for names in view["sites_per_round"].values() for site in names})


def privacy_now(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each site's ε and δ as last recorded: after the latest validation when it recorded them
    (its statistics' release spends privacy too), else at the end of training. A ledger only
    grows, so the latest figure is the largest."""
    latest = dict(view.get("privacy", {}))
    if view["validations"]:
        latest |= view["validations"][-1].get("privacy", {})
    return dict(sorted(latest.items()))


def judge(policy: GatePolicy, view: dict[str, Any]) -> list[Failure]:
    """Every failed criterion of ``policy`` for the registry version ``view`` (empty = pass)."""
    failures: list[Failure] = []
    validation = view["validations"][-1] if view["validations"] else None
    replied: dict[str, dict[str, dict[str, Any]]] = validation["sites"] if validation else {}
    sites = validated_sites(replied)
    minimum = max(policy.min_sites or 1, 1)  # a release nobody validated never passes
    if validation is not None and len(sites) < minimum:
        failures.append(Failure(FEDERATION, "validating sites", len(sites), f">= {minimum}"))
    if validation is not None:
        for site in contributors(view):
            if site not in replied:  # it trained the model but sent no validation (or a bad one)
                why = validation.get("missing", {}).get(site, "no reply")
                failures.append(
                    Failure(site, f"validation ({why})", None, "every contributing site")
                )
    for site, cells in sorted(sites.items()):
        metrics = cells.get(keys.OVERALL_CELL, {})
        lower_bounds = (
            ("AUROC", keys.AUROC, policy.min_auroc),
            ("AUROC 95% CI lower bound", keys.AUROC_CI_LOW, policy.min_auroc_ci_low),
        )
        for label, key, minimum in lower_bounds:
            measured = _value(metrics, key)
            if minimum is not None and (measured is None or measured < minimum):
                failures.append(Failure(site, label, measured, f">= {minimum:g}"))
        if policy.calibration_slope is not None:
            low, high = policy.calibration_slope
            slope = _value(metrics, keys.CALIBRATION_SLOPE)
            if slope is None or not low <= slope <= high:
                failures.append(
                    Failure(site, "calibration slope", slope, f"in [{low:g}, {high:g}]")
                )
        ece = _value(metrics, keys.ECE)
        if policy.max_ece is not None and (ece is None or ece > policy.max_ece):
            failures.append(Failure(site, "ECE", ece, f"<= {policy.max_ece:g}"))
        if policy.max_subgroup_auroc_gap is not None:
            limit = f"<= {policy.max_subgroup_auroc_gap:g}"
            for grouping, gap in _subgroup_gaps(cells).items():
                if gap > policy.max_subgroup_auroc_gap:
                    failures.append(Failure(site, f"subgroup AUROC gap ({grouping})", gap, limit))
    if policy.max_epsilon is not None:
        privacy = privacy_now(view)
        for site in sorted(set(contributors(view)) | set(privacy)):
            epsilon = privacy.get(site, {}).get("epsilon")
            measured = float(epsilon) if _number(epsilon) else math.inf
            if measured > policy.max_epsilon:
                failures.append(Failure(site, "epsilon", measured, f"<= {policy.max_epsilon:g}"))
    if validation is None:
        failures.append(Failure(FEDERATION, "validation", None, "run 'fedcare registry validate'"))
    return failures
