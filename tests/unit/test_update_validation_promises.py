"""The coordinator's update and metric checks, one promise per test (server.validation, weights).

Each rejection is a one-line reason that lands in the round log and ``summary.json``, so the
reasons are asserted word for word; each acceptance is asserted at the edge of its rule (a bound
met exactly, a weight of exactly one bucket, an accuracy of exactly 1), because a check that
rejects an honest site is no check either.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedcare import messages as keys
from fedcare.config import Weighting
from fedcare.server.validation import UpdateRules, metric_problem
from fedcare.weights import UpdateMismatch, l2_norm, update_deltas

GLOBAL = {"w": np.zeros(4, dtype=np.float32), "b": np.zeros(1, dtype=np.float32)}
PLAIN = {keys.TRAIN_LOSS: 0.5, keys.WEIGHT: 1.0}


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(values) for name, values in arrays.items()})


def _reply(
    arrays: dict[str, np.ndarray] | ArrayRecord = GLOBAL,
    metrics: dict[str, object] | None = None,
) -> RecordDict:
    record = arrays if isinstance(arrays, ArrayRecord) else _record(arrays)
    return RecordDict(
        {
            keys.ARRAYS: record,
            keys.METRICS: MetricRecord(PLAIN if metrics is None else metrics),  # type: ignore[arg-type]
            keys.SITE: ConfigRecord({keys.SITE_NAME: "va"}),
        }
    )


def _moved(delta_w: list[float]) -> dict[str, np.ndarray]:
    return {"w": np.array(delta_w, dtype=np.float32), "b": GLOBAL["b"].copy()}


UNIFORM = UpdateRules(max_update_norm=0.0, weighting=Weighting.UNIFORM, dp=False)
EXAMPLES = UpdateRules(max_update_norm=0.0, weighting=Weighting.EXAMPLES, dp=False)
DP = UpdateRules(max_update_norm=0.0, weighting=Weighting.UNIFORM, dp=True)


# --- what a reply must carry ------------------------------------------------------------------


def test_an_honest_plain_reply_is_accepted() -> None:
    # Prepare
    reply = _reply(_moved([0.1, -0.2, 0.0, 0.3]))
    # Execute
    reason = UNIFORM.check(reply, _record(GLOBAL))
    # Assert
    assert reason is None


def test_an_honest_dp_reply_carries_epsilon_and_weight_and_is_accepted() -> None:
    # Prepare
    reply = _reply(metrics={keys.EPSILON: 0.7, keys.WEIGHT: 1.0})
    # Execute
    reason = DP.check(reply, _record(GLOBAL))
    # Assert
    assert reason is None


def test_a_dp_reply_that_carries_a_training_loss_is_rejected_naming_both_sets() -> None:
    # Prepare
    reply = _reply(metrics={keys.TRAIN_LOSS: 0.5, keys.WEIGHT: 1.0})
    # Execute
    reason = DP.check(reply, _record(GLOBAL))
    # Assert
    assert reason == "metrics ['train-loss', 'weight'], expected ['epsilon', 'weight']"


def test_a_plain_reply_that_carries_epsilon_is_rejected_naming_both_sets() -> None:
    # Prepare
    reply = _reply(metrics={keys.EPSILON: 0.7, keys.WEIGHT: 1.0})
    # Execute
    reason = UNIFORM.check(reply, _record(GLOBAL))
    # Assert
    assert reason == "metrics ['epsilon', 'weight'], expected ['train-loss', 'weight']"


def test_a_reply_with_a_second_array_record_is_rejected_naming_the_records() -> None:
    # Prepare
    reply = _reply()
    reply["extra"] = _record(GLOBAL)
    # Execute
    reason = UNIFORM.check(reply, _record(GLOBAL))
    # Assert
    assert reason == "array records ['arrays', 'extra'], expected ['arrays']"


def test_a_reply_with_a_second_metric_record_is_rejected_naming_the_records() -> None:
    # Prepare
    reply = _reply()
    reply["more-metrics"] = MetricRecord({"x": 1.0})
    # Execute
    reason = UNIFORM.check(reply, _record(GLOBAL))
    # Assert
    assert reason == "metric records ['metrics', 'more-metrics'], expected ['metrics']"


def test_an_update_whose_bytes_are_not_an_array_is_rejected_as_undecodable() -> None:
    # Prepare: well-formed record metadata around bytes that are no array
    garbage = Array(dtype="float32", shape=(4,), stype="numpy.ndarray", data=b"not an array")
    reply = _reply(ArrayRecord({"w": garbage, "b": Array(GLOBAL["b"])}))
    # Execute
    reason = UNIFORM.check(reply, _record(GLOBAL))
    # Assert
    assert reason == "the update's arrays cannot be decoded"


def test_an_update_with_other_array_names_is_rejected_naming_both_lists() -> None:
    # Prepare
    reply = _reply({"b": GLOBAL["b"], "w": GLOBAL["w"]})
    # Execute
    reason = UNIFORM.check(reply, _record(GLOBAL))
    # Assert
    assert reason == "arrays ['b', 'w'] differ from the model's ['w', 'b']"


# --- the norm bound -----------------------------------------------------------------------------


def test_without_a_norm_bound_a_large_honest_update_is_accepted() -> None:
    # Prepare: bound 0 means no bound
    reply = _reply(_moved([300.0, 400.0, 0.0, 0.0]))
    # Execute
    reason = UNIFORM.check(reply, _record(GLOBAL))
    # Assert
    assert reason is None


def test_an_update_exactly_at_the_norm_bound_is_accepted() -> None:
    # Prepare: a 3-4-5 update in eighths, norm exactly 5/8 in float32 and float64
    rules = UpdateRules(max_update_norm=0.625, weighting=Weighting.UNIFORM, dp=False)
    reply = _reply(_moved([0.375, 0.5, 0.0, 0.0]))
    exact = _reply(_moved([0.0, 0.0, -0.625, 0.0]))
    # Execute
    reasons = (rules.check(reply, _record(GLOBAL)), rules.check(exact, _record(GLOBAL)))
    # Assert
    assert reasons == (None, None)


def test_an_update_over_a_bound_below_one_is_rejected_with_norm_and_bound() -> None:
    # Prepare
    rules = UpdateRules(max_update_norm=0.5, weighting=Weighting.UNIFORM, dp=False)
    reply = _reply(_moved([0.6, 0.0, 0.0, 0.0]))
    # Execute
    reason = rules.check(reply, _record(GLOBAL))
    # Assert
    assert reason == "update norm 0.6 exceeds the bound 0.5"


# --- the aggregation weight ---------------------------------------------------------------------


@pytest.mark.parametrize("weight", [math.inf, -math.inf, math.nan, [1.0, 1.0]])
def test_a_weight_that_is_not_one_finite_number_is_rejected(weight: object) -> None:
    # Prepare
    reply = _reply(metrics={keys.TRAIN_LOSS: 0.5, keys.WEIGHT: weight})
    # Execute
    reason = UNIFORM.check(reply, _record(GLOBAL))
    # Assert
    assert reason == "the reply carries no valid aggregation weight"


def test_uniform_weighting_rejects_any_weight_but_one() -> None:
    # Prepare
    reply = _reply(metrics={keys.TRAIN_LOSS: 0.5, keys.WEIGHT: 2.0})
    # Execute
    reason = UNIFORM.check(reply, _record(GLOBAL))
    # Assert
    assert reason == "weight 2 but this run weights every site 1"


@pytest.mark.parametrize("weight", [10.0, 20.0, 1230.0])
def test_example_weighting_accepts_row_counts_bucketed_to_ten(weight: float) -> None:
    # Prepare
    reply = _reply(metrics={keys.TRAIN_LOSS: 0.5, keys.WEIGHT: weight})
    # Execute
    reason = EXAMPLES.check(reply, _record(GLOBAL))
    # Assert
    assert reason is None


@pytest.mark.parametrize("weight", [0.0, 1.0, 5.0, 15.0, 1234.0])
def test_example_weighting_rejects_a_weight_that_is_no_bucketed_row_count(weight: float) -> None:
    # Prepare
    reply = _reply(metrics={keys.TRAIN_LOSS: 0.5, keys.WEIGHT: weight})
    # Execute
    reason = EXAMPLES.check(reply, _record(GLOBAL))
    # Assert
    assert reason == f"weight {weight:g} is not a row count bucketed to 10"


# --- metrics from any reply ---------------------------------------------------------------------


def test_metrics_at_the_ends_of_their_ranges_are_accepted() -> None:
    # Prepare
    metrics = {
        keys.TRAIN_LOSS: 0.0,
        keys.EVAL_LOSS: 0,
        keys.EVAL_ACCURACY: 1.0,
        keys.EVAL_AUROC: 0.0,
        keys.EPSILON: 12.5,
        keys.WEIGHT: 30.0,
    }
    # Execute
    problem = metric_problem(metrics)
    # Assert
    assert problem is None


def test_an_undefined_auroc_is_accepted_as_nan() -> None:
    # Prepare: a single-class test set; the metric sorted after it is valid
    metrics = {keys.EVAL_AUROC: math.nan, keys.EVAL_LOSS: 0.3, keys.WEIGHT: 1.0}
    # Execute
    problem = metric_problem(metrics)
    # Assert
    assert problem is None


def test_a_metric_after_an_undefined_auroc_is_still_checked() -> None:
    # Prepare: eval-auroc sorts before eval-loss
    metrics = {keys.EVAL_AUROC: math.nan, keys.EVAL_LOSS: -0.3}
    # Execute
    problem = metric_problem(metrics)
    # Assert
    assert problem == "metric 'eval-loss' = -0.3 is not a finite number in [0, inf]"


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        (keys.EVAL_AUROC, 1.5, "[0, 1]"),
        (keys.EVAL_ACCURACY, math.nan, "[0, 1]"),
        (keys.EVAL_ACCURACY, 1.01, "[0, 1]"),
        (keys.TRAIN_LOSS, math.nan, "[0, inf]"),
        (keys.EVAL_LOSS, math.inf, "[0, inf]"),
        (keys.EPSILON, -1, "[0, inf]"),
    ],
)
def test_a_metric_outside_its_range_is_rejected_naming_metric_value_and_range(
    name: str, value: float, allowed: str
) -> None:
    # Execute
    problem = metric_problem({name: value})
    # Assert
    assert problem == f"metric {name!r} = {value!r} is not a finite number in {allowed}"


@pytest.mark.parametrize("value", [True, "0.5", None, [0.5]])
def test_a_metric_that_is_not_a_plain_number_is_rejected(value: object) -> None:
    # Execute
    problem = metric_problem({keys.EVAL_ACCURACY: value})
    # Assert
    assert problem == "metric 'eval-accuracy' is not a number"


def test_a_metric_off_the_allow_list_is_rejected_by_name() -> None:
    # Execute
    problem = metric_problem({"patient-count": 12.0, keys.WEIGHT: 1.0})
    # Assert
    assert problem == "metric 'patient-count' is not on the allow-list"


# --- update_deltas and l2_norm ------------------------------------------------------------------


def test_update_deltas_are_local_minus_global_in_the_models_order_as_float64() -> None:
    # Prepare
    reference = _record({"w": np.array([1.0, 2.0], dtype=np.float32), "b": np.array([0.5])})
    local = {"w": np.array([1.5, 1.0], dtype=np.float32), "b": np.array([0.25])}
    # Execute
    deltas = update_deltas(local, reference)
    # Assert
    assert [d.dtype for d in deltas] == [np.float64, np.float64]
    np.testing.assert_array_equal(deltas[0], [0.5, -1.0])
    np.testing.assert_array_equal(deltas[1], [-0.25])


@pytest.mark.parametrize(
    ("local", "message"),
    [
        ({"w": np.zeros(3, dtype=np.float32)}, "arrays ['w'] differ from the model's ['w', 'b']"),
        (
            {"w": np.zeros((2, 2), dtype=np.float32), "b": np.zeros(1, dtype=np.float32)},
            "array 'w' has shape (2, 2), expected (4,)",
        ),
        (
            {"w": np.zeros(4, dtype=np.float64), "b": np.zeros(1, dtype=np.float32)},
            "array 'w' has dtype float64, expected float32",
        ),
        (
            {"w": np.zeros(4, dtype=np.float32), "b": np.array([np.inf], dtype=np.float32)},
            "array 'b' holds NaN or Inf",
        ),
    ],
)
def test_update_deltas_refuses_a_mismatched_update_naming_the_array(
    local: dict[str, np.ndarray], message: str
) -> None:
    # Execute
    with pytest.raises(UpdateMismatch) as refused:
        update_deltas(local, _record(GLOBAL))
    # Assert
    assert str(refused.value) == message


def test_l2_norm_is_the_norm_of_all_values_together() -> None:
    # Prepare: 3-4 in one array, 12 in another: sqrt(9 + 16 + 144) = 13
    arrays = [np.array([3.0, 4.0]), np.array([[12.0]]), np.zeros(2)]
    # Execute
    norm = l2_norm(arrays)
    # Assert
    assert norm == 13.0
