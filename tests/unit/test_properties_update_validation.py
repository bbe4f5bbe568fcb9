"""Properties of the coordinator's update checks (server.validation, fedcare.weights).

One broken or malicious site must not wreck the model: every update that is not finite, has
the wrong arrays (names, order, shapes, dtypes) or moves the model further than the norm bound is
rejected with a reason naming what is wrong; and every update that is finite, shaped like the
model, within the bound and sent with valid metrics is accepted (a check that rejects honest
sites is no check either). Models, updates and bounds are drawn at random.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcare import messages as keys
from fedcare.config import Weighting
from fedcare.server.validation import UpdateRules, metric_problem

PROPERTY = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
NAMES = ("weight", "bias", "hidden.weight", "hidden.bias")
SHAPES = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5)
MARGIN = 1e-3  # float32 rounding of local = global + delta moves the norm by far less


@st.composite
def models(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """A model's arrays: 1-4 named float32 arrays of small shapes, values in [-1, 1]."""
    count = draw(st.integers(1, len(NAMES)))
    return {
        name: draw(hnp.arrays(np.float32, draw(SHAPES), elements=st.floats(-1, 1, width=32)))
        for name in NAMES[:count]
    }


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(values) for name, values in arrays.items()})


def _reply(arrays: dict[str, np.ndarray], metrics: dict[str, float]) -> RecordDict:
    return RecordDict(
        {
            keys.ARRAYS: _record(arrays),
            keys.METRICS: MetricRecord(metrics),  # type: ignore[arg-type]
            keys.SITE: ConfigRecord({keys.SITE_NAME: "va"}),
        }
    )


@st.composite
def rules(draw: st.DrawFn, bounded: bool | None = None) -> UpdateRules:
    """Any run's rules; ``bounded`` forces a norm bound (True) or none (False)."""
    bound = draw(st.floats(0.01, 10.0)) if bounded is not False else 0.0
    if bounded is None and draw(st.booleans()):
        bound = 0.0
    return UpdateRules(bound, draw(st.sampled_from(Weighting)), dp=draw(st.booleans()))


@st.composite
def valid_metrics(draw: st.DrawFn, rule: UpdateRules) -> dict[str, float]:
    """What an honest site sends with its update under ``rule``."""
    if rule.weighting is Weighting.UNIFORM:
        weight = 1.0
    else:
        weight = float(keys.COUNT_BUCKET * draw(st.integers(1, 10_000)))
    if rule.dp:
        return {keys.EPSILON: draw(st.floats(0.0, 1e3)), keys.WEIGHT: weight}
    return {keys.TRAIN_LOSS: draw(st.floats(0.0, 1e3)), keys.WEIGHT: weight}


def _moved(model: dict[str, np.ndarray], direction: list[np.ndarray], norm: float) -> dict:
    """``model`` moved by ``direction`` scaled to L2 length ``norm`` (all arrays together)."""
    length = math.sqrt(sum(float(np.sum(d.astype(np.float64) ** 2)) for d in direction))
    scale = norm / length
    return {
        name: (values.astype(np.float64) + direction[i].astype(np.float64) * scale).astype(
            values.dtype
        )
        for i, (name, values) in enumerate(model.items())
    }


def _sent_norm(local: dict[str, np.ndarray], model: dict[str, np.ndarray]) -> float:
    """The update's norm computed independently of fedcare.weights, from what was sent."""
    flat = [(local[n].astype(np.float64) - model[n].astype(np.float64)).ravel() for n in model]
    return float(np.linalg.norm(np.concatenate(flat)))


@st.composite
def directions(draw: st.DrawFn, model: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A non-zero direction shaped like ``model``."""
    unit = st.floats(-1, 1, width=32, allow_subnormal=False)
    direction = [draw(hnp.arrays(np.float32, a.shape, elements=unit)) for a in model.values()]
    assume(any(np.any(d != 0) for d in direction))
    return direction


@st.composite
def honest_updates(draw: st.DrawFn) -> tuple[UpdateRules, dict, dict, dict]:
    """(rules, global model, local model within the bound, valid metrics)."""
    rule = draw(rules())
    model = draw(models())
    bound = rule.max_update_norm
    norm = draw(st.floats(0.0, bound * (1 - MARGIN))) if bound else draw(st.floats(0.0, 1e3))
    local = _moved(model, draw(directions(model)), norm) if norm else dict(model)
    return rule, model, local, draw(valid_metrics(rule))


@PROPERTY
@given(update=honest_updates())
def test_every_finite_right_shape_in_bound_update_with_valid_metrics_is_accepted(
    update: tuple[UpdateRules, dict, dict, dict],
) -> None:
    # Prepare
    rule, model, local, metrics = update
    reply = _reply(local, metrics)
    assert metric_problem(metrics) is None
    # Execute
    reason = rule.check(reply, _record(model))
    # Assert
    assert reason is None, f"honest update rejected: {reason}"


NON_FINITE = st.sampled_from([np.nan, np.inf, -np.inf])


@PROPERTY
@given(update=honest_updates(), data=st.data())
def test_any_update_holding_a_nan_or_inf_is_rejected_naming_the_array(
    update: tuple[UpdateRules, dict, dict, dict], data: st.DataObject
) -> None:
    # Prepare: some (possibly one, possibly all) values of one array made non-finite
    rule, model, local, metrics = update
    name = data.draw(st.sampled_from(list(local)), label="array")
    poisoned = local[name].copy().ravel()
    where = data.draw(
        st.lists(st.integers(0, poisoned.size - 1), min_size=1, unique=True), label="positions"
    )
    for position in where:
        poisoned[position] = data.draw(NON_FINITE, label="value")
    sent = local | {name: poisoned.reshape(local[name].shape)}
    # Execute
    reason = rule.check(_reply(sent, metrics), _record(model))
    # Assert
    assert reason is not None and f"array {name!r} holds NaN or Inf" in reason


@PROPERTY
@given(update=honest_updates(), data=st.data())
def test_any_update_shaped_unlike_the_model_is_rejected_with_the_reason(
    update: tuple[UpdateRules, dict, dict, dict], data: st.DataObject
) -> None:
    # Prepare
    rule, model, local, metrics = update
    how = data.draw(
        st.sampled_from(["shape", "dtype", "missing", "extra", "renamed", "reordered"]),
        label="how",
    )
    name = data.draw(st.sampled_from(list(local)), label="array")
    sent = dict(local)
    if how == "shape":
        shape = data.draw(SHAPES.filter(lambda s: s != local[name].shape), label="shape")
        sent[name] = np.zeros(shape, local[name].dtype)
        expected = f"array {name!r} has shape {shape}, expected {local[name].shape}"
    elif how == "dtype":
        dtype = data.draw(st.sampled_from([np.float64, np.float16, np.int32, np.int64]))
        sent[name] = local[name].astype(dtype)
        expected = f"array {name!r} has dtype {np.dtype(dtype)}, expected float32"
    elif how == "missing":
        del sent[name]
        expected = "differ from the model's"
    elif how == "extra":
        sent["extra"] = np.zeros(1, np.float32)
        expected = "differ from the model's"
    elif how == "renamed":
        sent = {(n + "_" if n == name else n): v for n, v in local.items()}
        expected = "differ from the model's"
    else:
        assume(len(local) > 1)
        sent = dict(reversed(list(local.items())))
        expected = "differ from the model's"
    # Execute
    reason = rule.check(_reply(sent, metrics), _record(model))
    # Assert
    assert reason is not None and expected in reason, reason


@PROPERTY
@given(
    rule=rules(bounded=True),
    model=models(),
    ratio=st.floats(1.0 + MARGIN, 3.0),
    data=st.data(),
)
def test_any_update_longer_than_the_norm_bound_is_rejected_with_its_norm(
    rule: UpdateRules, model: dict, ratio: float, data: st.DataObject
) -> None:
    # Prepare
    local = _moved(model, data.draw(directions(model)), rule.max_update_norm * ratio)
    metrics = data.draw(valid_metrics(rule))
    norm = _sent_norm(local, model)
    assert norm > rule.max_update_norm * (1 + MARGIN / 2)
    # Execute
    reason = rule.check(_reply(local, metrics), _record(model))
    # Assert
    found = re.search(r"update norm (\S+) exceeds the bound", reason or "")
    assert found is not None, reason
    assert float(found.group(1)) == pytest.approx(norm, rel=5e-3)  # printed to 3 digits


BAD_WEIGHTS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -10.0, 5.0, 199.0, 10.5, 1e308]),
    st.floats(allow_nan=False).filter(lambda w: w != 1.0 and (w < 10 or w % 10 != 0)),
)


@PROPERTY
@given(update=honest_updates(), weight=BAD_WEIGHTS)
def test_an_invalid_aggregation_weight_is_rejected_with_a_reason(
    update: tuple[UpdateRules, dict, dict, dict], weight: float
) -> None:
    rule, model, local, metrics = update
    assume(not (rule.weighting is Weighting.EXAMPLES and weight == 1e308))  # a bucket multiple

    reason = rule.check(_reply(local, metrics | {keys.WEIGHT: weight}), _record(model))

    assert reason is not None and "weight" in reason, reason


@PROPERTY
@given(
    update=honest_updates(),
    value=st.sampled_from([math.nan, math.inf, -math.inf, -1.0]),
    data=st.data(),
)
def test_any_non_finite_or_negative_metric_is_rejected_naming_the_metric(
    update: tuple[UpdateRules, dict, dict, dict], value: float, data: st.DataObject
) -> None:
    # Prepare
    rule, model, local, metrics = update
    name = data.draw(st.sampled_from(sorted(metrics)), label="metric")
    sent = metrics | {name: value}
    # Execute: the coordinator screens every reply's metrics before its update
    problem = metric_problem(sent)
    # Assert
    assert problem is not None and f"metric {name!r}" in problem, problem
    if name == keys.WEIGHT:
        assert "weight" in str(rule.check(_reply(local, sent), _record(model)))
