"""The serving path checks a request's inputs in one pass over all of them (numpy, fast); the
error then comes from an input-by-input check that names the first bad input. The two must
agree on every request: the fast pass may never admit what the input-by-input rules refuse
(an out-of-range or non-finite value reaching the model), nor refuse what they admit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcare.bundle import InvalidInput, ReleasedModel, load_bundle
from tests.release_bundle import make_bundle, release_key

ROWS = st.integers(min_value=1, max_value=4)
BAD = ("nan", "inf", "below", "above", "off-level")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, site_paths: dict[str, Path]) -> ReleasedModel:
    root = tmp_path_factory.mktemp("property")
    keys = release_key(root / "owner")
    bundle = make_bundle(root / "release", keys, site_paths["cleveland"], model="logreg")
    return load_bundle(bundle, keys.public_key)


def _value(spec: Any, kind: str, draw: Any) -> float:
    if kind == "nan":
        return float("nan")
    if kind == "inf":
        return float("inf") if draw(st.booleans()) else float("-inf")
    if kind == "below":
        return spec.minimum - draw(st.floats(0.001, 100.0))
    if kind == "above":
        return spec.maximum + draw(st.floats(0.001, 100.0))
    if kind == "off-level" and spec.levels is not None:
        return max(spec.levels) + 0.5 if max(spec.levels) + 0.5 <= spec.maximum else spec.minimum
    if spec.levels is not None:
        return float(draw(st.sampled_from(spec.levels)))
    return draw(st.floats(spec.minimum, spec.maximum))


@st.composite
def requests(draw: Any, model: ReleasedModel) -> dict[str, Any]:
    rows = draw(ROWS)
    columns: dict[str, Any] = {}
    for spec in model.inputs:
        if draw(st.integers(0, 40)) == 0:
            continue  # a missing input now and then
        values = [
            _value(
                spec, draw(st.sampled_from(BAD)) if draw(st.integers(0, 12)) == 0 else "ok", draw
            )
            for _ in range(rows + (1 if draw(st.integers(0, 40)) == 0 else 0))
        ]
        dtype = draw(st.sampled_from([np.float32, np.float64]))
        array = np.asarray(values, dtype=dtype)
        columns[spec.name] = array.reshape(-1, 1) if draw(st.booleans()) else array
    if draw(st.integers(0, 40)) == 0:
        columns["heart_rate"] = np.zeros(rows)  # an input the model does not have
    return columns


def _input_by_input(model: ReleasedModel, columns: dict[str, Any]) -> str | None:
    """The input the input-by-input rules name, or None when they admit the request."""
    try:
        model._refuse(columns, None)
    except InvalidInput as exc:
        return exc.input_name
    except AssertionError:
        return None
    raise AssertionError("_refuse returned")  # pragma: no cover


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_one_pass_check_agrees_with_the_input_by_input_rules(
    model: ReleasedModel, data: st.DataObject
) -> None:
    columns = data.draw(requests(model))
    expected = _input_by_input(model, columns)
    try:
        model.check_inputs(columns)
        admitted = None
    except InvalidInput as exc:
        admitted = exc.input_name
        assert expected is not None, f"refused {exc} although every rule holds"
    assert admitted == expected
