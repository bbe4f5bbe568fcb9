"""The coordinator's per-round instructions, read from the message's ConfigRecord."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from flwr.app import ConfigRecord

from fedcare import messages as keys
from fedcare.config import AccountantName, Weighting
from fedcare.feature_stats import FeatureStats
from fedcare.privacy.budget import DpRequest
from fedcare.tasks import ModelName


def _number(config: ConfigRecord, key: str, default: float | None = None) -> float:
    value = config.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"round config {key!r} must be a number, got {value!r}")
    return float(value)


def _numbers(config: ConfigRecord, key: str) -> tuple[float, ...]:
    values = config.get(key)
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"round config {key!r} must be a list of numbers")
    return tuple(float(v) for v in values)


def _text(config: ConfigRecord, key: str) -> str | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"round config {key!r} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class RoundRequest:
    """What to train or evaluate this round, and under which DP mechanism (``dp`` None: none)."""

    task: str
    model: ModelName
    server_round: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    weighting: Weighting
    proximal_mu: float
    dp: DpRequest | None
    # The federation's statistics to standardise with (preprocessing = "federation"), or None:
    # the site's own training statistics.
    preprocessing: FeatureStats | None = None
    # The run's identity across resumes (keys.RUN_UID: the first Flower run's id), or None: the
    # coordinator sent none, and the site keys its ledger and reply cache by Flower's run id.
    run_uid: str | None = None

    @classmethod
    def from_record(cls, config: ConfigRecord) -> RoundRequest:
        dp = None
        if bool(config.get(keys.DP, False)):
            dp = DpRequest(
                target_epsilon=_number(config, keys.DP_TARGET_EPSILON),
                noise_multiplier=_number(config, keys.DP_NOISE_MULTIPLIER),
                max_grad_norm=_number(config, keys.DP_MAX_GRAD_NORM),
                planned_rounds=int(_number(config, keys.DP_PLANNED_ROUNDS)),
                accountant=AccountantName(str(config[keys.DP_ACCOUNTANT])),
            )
        preprocessing = None
        if keys.PREPROCESSING_MEAN in config or keys.PREPROCESSING_STD in config:
            from fedcare.tasks import get_task

            preprocessing = FeatureStats(
                tuple(get_task(str(config[keys.TASK])).feature_names),
                _numbers(config, keys.PREPROCESSING_MEAN),
                _numbers(config, keys.PREPROCESSING_STD),
            )
        return cls(
            task=str(config[keys.TASK]),
            model=ModelName(str(config[keys.MODEL])),
            server_round=int(_number(config, keys.SERVER_ROUND, 0)),
            local_epochs=int(_number(config, keys.LOCAL_EPOCHS)),
            batch_size=int(_number(config, keys.BATCH_SIZE)),
            learning_rate=_number(config, keys.LEARNING_RATE),
            seed=int(_number(config, keys.SEED)),
            weighting=Weighting(str(config[keys.WEIGHTING])),
            proximal_mu=_number(config, keys.PROXIMAL_MU, 0.0),
            dp=dp,
            preprocessing=preprocessing,
            run_uid=_text(config, keys.RUN_UID),
        )

    def shuffle_seed(self, site_name: str) -> int:
        """Distinct, reproducible shuffling seed per run seed, round and site (non-DP only)."""
        return zlib.crc32(f"{self.seed}:{self.server_round}:{site_name}".encode())
