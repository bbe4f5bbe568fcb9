"""Run configuration: one frozen, validated dataclass, from TOML plus CLI overrides.

The same object travels to Flower as a flat run-config (``to_run_config``) and is rebuilt, and so
re-validated, inside the ServerApp (``from_run_config``): a bad value fails before round 1.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from fedcare.errors import ConfigError
from fedcare.tasks import ModelName, require_task


class StrategyName(StrEnum):
    """Aggregation strategies, each one of Flower's own ``flwr.serverapp.strategy`` classes."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"
    # Robust aggregation: each needs every site's individual update (not with SecAgg+).
    FEDTRIMMEDAVG = "fedtrimmedavg"
    FEDMEDIAN = "fedmedian"
    KRUM = "krum"

    @property
    def robust(self) -> bool:
        """True for the Byzantine-robust strategies."""
        return self in _ROBUST_STRATEGIES


_ROBUST_STRATEGIES = frozenset(
    {StrategyName.FEDTRIMMEDAVG, StrategyName.FEDMEDIAN, StrategyName.KRUM}
)


class Weighting(StrEnum):
    """How site updates are weighted in the average.

    ``uniform`` (default): every hospital counts the same and no site sends a training-set
    size at all. ``examples``: FedAvg's classic weighting by training rows, which sites report
    rounded to a bucket of 10 so no exact count leaves a site.
    """

    UNIFORM = "uniform"
    EXAMPLES = "examples"


class Preprocessing(StrEnum):
    """Whose statistics standardise the features a model trains on.

    ``federation`` (default): before round 1 every site releases noised sums of its training
    rows (a Gaussian mechanism on its privacy ledger, :mod:`fedcare.feature_stats`) and all
    sites standardise with the combined statistics: the model then trains on inputs scaled
    exactly as a release serves them.
    Measured on validation rows (``fedcare bench select-global``; README, "How the defaults were
    chosen"), ``federation`` gives the higher accuracy (0.766 against 0.635 without DP, 0.686
    against 0.611 at ε = 1; AUROC lower), and the model trains as a release serves it.
    Its price: the release spends a little of each site's budget, and its noise is drawn from
    the OS's entropy, so a run is not reproducible from its seed alone. ``site`` (FLamby's
    protocol): each site standardises with its own training rows' statistics; nothing is
    released, and a run without DP is reproducible from its seed.
    """

    SITE = "site"
    FEDERATION = "federation"


class AccountantName(StrEnum):
    """Opacus accountants a site may compute epsilon with; RDP is the conservative default."""

    RDP = "rdp"
    PRV = "prv"


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a federated run; field names are the TOML keys with '-'."""

    scenario: str = "heart-disease"
    task: str = "heart-disease"
    model: ModelName = ModelName.LOGREG
    strategy: StrategyName = StrategyName.FEDYOGI
    weighting: Weighting = Weighting.UNIFORM
    preprocessing: Preprocessing = Preprocessing.FEDERATION
    rounds: int = 20
    local_epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 0.02
    proximal_mu: float = 0.1
    server_learning_rate: float = 0.03
    seed: int = 0
    dp: bool = False
    target_epsilon: float = 0.0  # > 0: sites calibrate noise to spend at most this over the run
    noise_multiplier: float = 0.0  # > 0: fixed noise multiplier instead of a target
    max_grad_norm: float = 1.0
    accountant: AccountantName = AccountantName.RDP
    # Robustness: the coordinator rejects a site update whose L2 norm (local - global) exceeds
    # this (0 = no bound); under SecAgg+ each site clips to it before masking instead.
    max_update_norm: float = 2.0
    trim_fraction: float = 0.25  # fedtrimmedavg: share of sites cut at each end, per value
    max_malicious_sites: int = 1  # krum: sites assumed Byzantine
    # SecAgg+ (Flower's protocol): the coordinator learns only the sum of the sites' updates.
    secure_aggregation: bool = False
    secagg_num_shares: float = 1.0  # <= 1: fraction of the sampled sites; > 1: a count
    secagg_threshold: float = 0.67  # <= 1: fraction of num_shares; > 1: a count

    def __post_init__(self) -> None:
        for name, enum in (
            ("model", ModelName),
            ("strategy", StrategyName),
            ("weighting", Weighting),
            ("preprocessing", Preprocessing),
            ("accountant", AccountantName),
        ):
            object.__setattr__(self, name, parse_choice(enum, name, getattr(self, name)))
        require_task(self.task)
        _require(self.rounds, "rounds", 1, 10_000)
        _require(self.local_epochs, "local-epochs", 1, 1_000)
        _require(self.batch_size, "batch-size", 1, 1_000_000)
        _require_positive(self.learning_rate, "learning-rate")
        _require_positive(self.server_learning_rate, "server-learning-rate")
        if not isinstance(self.proximal_mu, int | float) or self.proximal_mu < 0:
            raise ConfigError(f"proximal-mu: {self.proximal_mu!r} must be a number >= 0")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed: {self.seed!r} must be an integer >= 0")
        if not isinstance(self.dp, bool):
            raise ConfigError(f"dp: {self.dp!r} must be true or false")
        _require_positive(self.max_grad_norm, "max-grad-norm")
        for key, value in (
            ("target-epsilon", self.target_epsilon),
            ("noise-multiplier", self.noise_multiplier),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{key}: {value!r} must be a number >= 0")
        if self.dp:
            if (self.target_epsilon > 0) == (self.noise_multiplier > 0):
                raise ConfigError(
                    "dp: set exactly one of target-epsilon (calibrated noise) or "
                    "noise-multiplier (fixed noise)"
                )
            if self.strategy is StrategyName.FEDPROX:
                raise ConfigError(
                    "strategy: fedprox is not available with dp (its proximal term would bypass "
                    "per-sample clipping); choose fedavg, fedadam or fedyogi"
                )
            if self.weighting is not Weighting.UNIFORM:
                raise ConfigError(
                    "weighting: dp weighs every site 1 (uniform); a row count, even bucketed, is "
                    "an un-noised number about the site's data that its ledger does not account"
                )
        self._check_robustness()

    def _check_robustness(self) -> None:
        norm = self.max_update_norm
        if not isinstance(norm, int | float) or isinstance(norm, bool) or not norm >= 0:
            raise ConfigError(f"max-update-norm: {norm!r} must be a number >= 0 (0 = no bound)")
        if not isinstance(self.trim_fraction, int | float) or not 0 < self.trim_fraction < 0.5:
            raise ConfigError(f"trim-fraction: {self.trim_fraction!r} must be in (0, 0.5)")
        _require(self.max_malicious_sites, "max-malicious-sites", 0, 1_000)
        if not isinstance(self.secure_aggregation, bool):
            raise ConfigError(
                f"secure-aggregation: {self.secure_aggregation!r} must be true or false"
            )
        _require_positive(self.secagg_num_shares, "secagg-num-shares")
        _require_positive(self.secagg_threshold, "secagg-threshold")
        if not self.secure_aggregation:
            return
        if self.strategy.robust:
            raise ConfigError(
                f"strategy: {self.strategy} needs each site's own update, which SecAgg+ hides "
                "from the coordinator; choose fedavg, fedprox, fedadam or fedyogi, or turn "
                "secure-aggregation off"
            )
        if self.weighting is not Weighting.UNIFORM:
            raise ConfigError(
                "weighting: secure-aggregation weighs every site 1 (uniform); Flower's SecAgg+ "
                "would quantise bucketed row counts too coarsely"
            )
        if self.max_update_norm <= 0:
            raise ConfigError(
                "max-update-norm: secure-aggregation needs a bound > 0 (each site clips its "
                "update to it before masking)"
            )
        for key, value in (
            ("secagg-num-shares", self.secagg_num_shares),
            ("secagg-threshold", self.secagg_threshold),
        ):
            if value > 1 and value != int(value):
                raise ConfigError(
                    f"{key}: {value!r} must be a fraction <= 1 or a whole number of sites"
                )
        if self.secagg_num_shares > 1 and self.secagg_num_shares < 3:
            raise ConfigError("secagg-num-shares: a count of shares must be at least 3")
        if 1 < self.secagg_num_shares <= self.secagg_threshold:
            raise ConfigError(
                f"secagg-threshold: {self.secagg_threshold:g} must be below "
                f"secagg-num-shares ({self.secagg_num_shares:g})"
            )

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied (and validated); ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_run_config(self) -> dict[str, str | int | float]:
        """Flat Flower run-config (TOML-style keys)."""
        return {_key(f.name): _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_run_config(cls, values: Mapping[str, Any], source: str = "run-config") -> RunConfig:
        """Rebuild from TOML-style keys; unknown keys are errors, missing keys take defaults."""
        known = {_key(f.name): f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(known))}"
            )
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            expected = _FIELD_TYPES[known[key]]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if expected in (int, float) and (
                isinstance(value, bool) or not isinstance(value, expected)
            ):
                raise ConfigError(f"{source}: {key} = {value!r} must be {expected.__name__}")
            kwargs[known[key]] = value
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


_FIELD_TYPES: dict[str, type] = {
    "scenario": str, "task": str, "model": str, "strategy": str, "weighting": str,
    "preprocessing": str,
    "rounds": int, "local_epochs": int, "batch_size": int, "learning_rate": float,
    "proximal_mu": float, "server_learning_rate": float, "seed": int, "dp": bool,
    "target_epsilon": float, "noise_multiplier": float, "max_grad_norm": float, "accountant": str,
    "max_update_norm": float, "trim_fraction": float, "max_malicious_sites": int,
    "secure_aggregation": bool, "secagg_num_shares": float, "secagg_threshold": float,
}  # fmt: skip


def load_config(path: Path | None) -> RunConfig:
    """Defaults, overlaid with the TOML file at ``path`` (flat keys or a ``[run]`` table)."""
    if path is None:
        return RunConfig()
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    table = document.get("run", document)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [run] must be a table")
    return RunConfig.from_run_config(table, source=str(path))


def _key(field_name: str) -> str:
    return field_name.replace("_", "-")


def _plain(value: Any) -> str | int | float:
    return str(value) if isinstance(value, StrEnum) else value


E = TypeVar("E", bound=StrEnum)


def parse_choice(enum: type[E], name: str, value: Any) -> E:
    """``value`` as a member of ``enum``, or a one-line error listing the allowed values."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ConfigError(
            f"{_key(name)}: unknown value {value!r}; choose one of: {allowed}"
        ) from None


def _require(value: Any, key: str, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{key}: {value!r} must be an integer from {low} to {high}")


def _require_positive(value: Any, key: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{key}: {value!r} must be a number > 0")
