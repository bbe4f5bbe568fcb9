"""The pieces of SecAgg+ wiring and update validation that need no federation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedcare import messages as keys
from fedcare.client.app import app
from fedcare.config import RunConfig, StrategyName, Weighting
from fedcare.errors import ConfigError
from fedcare.privacy.ledger import LEDGER_FILE
from fedcare.privacy.secure_aggregation import (
    SecAggSettings,
    apply_mean_update,
    clip_update,
)
from fedcare.server.validation import UpdateRules
from fedcare.simulations.adversaries import Attack, corrupt, parse_attacks
from fedcare.weights import UpdateMismatch
from tests.flower_harness import site_context, train_message


def _record(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord({name: Array(values) for name, values in arrays.items()})


GLOBAL = _record(weight=np.zeros((1, 3), np.float32), bias=np.zeros((1,), np.float32))


def _reply(arrays: ArrayRecord, **metrics: float) -> RecordDict:
    values = {keys.TRAIN_LOSS: 0.5, keys.WEIGHT: 1.0} | metrics
    return RecordDict(
        {
            keys.ARRAYS: arrays,
            keys.METRICS: MetricRecord(values),  # type: ignore[arg-type]
            keys.SITE: ConfigRecord({keys.SITE_NAME: "va"}),
        }
    )


RULES = UpdateRules(max_update_norm=1.0, weighting=Weighting.UNIFORM, dp=False)
HONEST = _record(weight=np.full((1, 3), 0.1, np.float32), bias=np.full((1,), 0.1, np.float32))


def test_an_honest_update_is_accepted() -> None:
    assert RULES.check(_reply(HONEST), GLOBAL) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (_reply(_record(weight=np.zeros((1, 3), np.float32))), "differ from the model's"),
        (
            _reply(_record(weight=np.zeros((1, 2), np.float32), bias=np.zeros(1, np.float32))),
            "has shape (1, 2), expected (1, 3)",
        ),
        (
            _reply(_record(weight=np.zeros((1, 3), np.float64), bias=np.zeros(1, np.float32))),
            "has dtype float64, expected float32",
        ),
        (
            _reply(
                _record(weight=np.full((1, 3), np.nan, np.float32), bias=np.zeros(1, np.float32))
            ),
            "'weight' holds NaN or Inf",
        ),
        (
            _reply(
                _record(weight=np.zeros((1, 3), np.float32), bias=np.full(1, np.inf, np.float32))
            ),
            "'bias' holds NaN or Inf",
        ),
        (
            _reply(_record(weight=np.full((1, 3), 0.9, np.float32), bias=np.zeros(1, np.float32))),
            "update norm 1.56 exceeds the bound 1",
        ),
        (_reply(HONEST, **{keys.WEIGHT: 1000.0}), "weight 1000 but this run weights every site 1"),
        (
            _reply(HONEST, **{"exact-count": 199.0}),
            "metrics ['exact-count', 'train-loss', 'weight']",
        ),
        (RecordDict({keys.METRICS: MetricRecord({keys.WEIGHT: 1.0})}), "array records []"),
    ],
)
def test_a_bad_update_is_rejected_with_its_reason(content: RecordDict, reason: str) -> None:
    result = RULES.check(content, GLOBAL)
    assert result is not None and reason in result


def test_norm_bound_zero_means_no_bound_and_examples_weights_must_be_buckets() -> None:
    big = _record(weight=np.full((1, 3), 50.0, np.float32), bias=np.zeros(1, np.float32))
    examples = UpdateRules(max_update_norm=0.0, weighting=Weighting.EXAMPLES, dp=False)
    assert examples.check(_reply(big, **{keys.WEIGHT: 200.0}), GLOBAL) is None
    assert "bucketed" in str(examples.check(_reply(big, **{keys.WEIGHT: 199.0}), GLOBAL))


def test_clip_update_scales_long_updates_to_the_bound_and_keeps_short_ones() -> None:
    local = {"weight": np.full((1, 3), 3.0, np.float32), "bias": np.full((1,), 4.0, np.float32)}
    clipped = clip_update(local, GLOBAL, bound=2.0)
    assert clipped.norm == pytest.approx(np.sqrt(27 + 16))
    assert np.sqrt(sum(float(np.sum(a * a)) for a in clipped.arrays)) == pytest.approx(2.0)
    kept = clip_update(local, GLOBAL, bound=100.0)
    assert kept.scale == 1.0 and np.array_equal(kept.arrays[1], np.full((1,), 4.0))
    with pytest.raises(UpdateMismatch, match="NaN"):
        clip_update(local | {"bias": np.full((1,), np.nan, np.float32)}, GLOBAL, 2.0)
    with pytest.raises(UpdateMismatch, match="differ"):
        clip_update({"bias": local["bias"], "weight": local["weight"]}, GLOBAL, 2.0)


def test_the_mean_update_lands_on_the_global_arrays_with_their_names_and_dtypes() -> None:
    new = apply_mean_update(GLOBAL, [np.full((1, 3), 0.5), np.full((1,), -0.25)])
    assert list(new.keys()) == ["weight", "bias"]
    assert new["weight"].dtype == "float32" and new["weight"].numpy().tolist() == [[0.5] * 3]
    assert new["bias"].numpy().tolist() == [-0.25]


def test_secagg_settings_pass_counts_as_ints_and_fractions_as_floats() -> None:
    counted = SecAggSettings.from_run(
        RunConfig(secure_aggregation=True, secagg_num_shares=3.0, secagg_threshold=2.0)
    )
    assert counted.num_shares == 3 and isinstance(counted.num_shares, int)
    assert counted.reconstruction_threshold == 2 and counted.clipping_range == 2.0
    fraction = SecAggSettings.from_run(RunConfig(secure_aggregation=True))
    assert fraction.num_shares == 1.0 and fraction.reconstruction_threshold == 0.67


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": StrategyName.FEDMEDIAN}, "fedmedian needs each site's own update"),
        ({"weighting": Weighting.EXAMPLES}, "weighs every site 1"),
        ({"max_update_norm": 0.0}, "needs a bound > 0"),
        ({"secagg_num_shares": 3.0, "secagg_threshold": 3.0}, "must be below"),
        ({"secagg_num_shares": 2.0}, "at least 3"),
        ({"secagg_threshold": 2.5}, "whole number"),
    ],
)
def test_invalid_secure_aggregation_settings_are_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig(secure_aggregation=True, **changes)  # type: ignore[arg-type]


def test_robust_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="trim-fraction"):
        RunConfig(trim_fraction=0.5)
    with pytest.raises(ConfigError, match="max-update-norm"):
        RunConfig(max_update_norm=-1.0)


def test_attacks_corrupt_what_they_say() -> None:
    local = _record(weight=np.full((1, 3), 0.1, np.float32), bias=np.full((1,), 0.2, np.float32))
    assert np.isnan(corrupt(Attack.NAN, local, GLOBAL)["bias"].numpy()).all()
    assert corrupt(Attack.WRONG_SHAPE, local, GLOBAL)["weight"].shape == (1, 2)
    scaled = corrupt(Attack.SCALE100, local, GLOBAL)["bias"].numpy()
    assert scaled.tolist() == pytest.approx([20.0])
    with pytest.raises(ConfigError, match="unknown site 'mayo'"):
        parse_attacks(["mayo=nan"], ["va"])
    with pytest.raises(ConfigError, match="choose one of: nan, wrong-shape, scale100, dropout"):
        parse_attacks(["va=flood"], ["va"])


def test_a_site_that_requires_secure_aggregation_declines_a_plain_round(
    site_paths: dict[str, Path], tmp_path: Path
) -> None:
    context = site_context(
        "va", site_paths["va"], tmp_path,
        **{"require-dp": "false", "require-secure-aggregation": "true"},
    )  # fmt: skip
    reply = app(train_message(RunConfig(rounds=1), 1), context)
    assert reply.has_error() and reply.error.reason == keys.REFUSED_SECAGG_REQUIRED
    assert not (tmp_path / LEDGER_FILE).exists()  # nothing trained, nothing spent
