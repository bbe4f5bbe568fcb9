"""A site's own policy: conservative defaults, every field validated with a one-line refusal,
and a node-config form that reads back to the same policy."""

from __future__ import annotations

from typing import Any

import pytest

from fedcare.client.policy import DEFAULT_MAX_EPSILON, SitePolicy
from fedcare.errors import ConfigError

STRICT = SitePolicy(
    max_epsilon=3.0,
    delta=1e-6,
    require_dp=False,
    require_secure_aggregation=True,
    ignore_columns=("smoker", "bmi"),
)
STRICT_MAPPING = {
    "max-epsilon": 3.0,
    "delta": 1e-6,
    "require-dp": "false",
    "require-secure-aggregation": "true",
    "ignore-columns": "smoker,bmi",
}


def test_the_defaults_are_conservative() -> None:
    policy = SitePolicy()
    assert DEFAULT_MAX_EPSILON == 10.0
    assert (policy.max_epsilon, policy.delta, policy.require_dp) == (10.0, None, True)
    assert (policy.require_secure_aggregation, policy.ignore_columns) == (False, ())


@pytest.mark.parametrize("value", [0, 0.0, -1.0, "10", None])
def test_a_budget_that_is_not_a_positive_number_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError) as refused:
        SitePolicy(max_epsilon=value)
    assert str(refused.value) == f"site policy: max-epsilon {value!r} must be > 0"


def test_a_nan_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^site policy: max-epsilon nan must be > 0$"):
        SitePolicy(max_epsilon=float("nan"))


@pytest.mark.parametrize("value", [0.5, 1, 1e-3, float("inf")])
def test_any_positive_budget_is_accepted(value: float) -> None:
    assert SitePolicy(max_epsilon=value).max_epsilon == value


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -1e-5, 2])
def test_a_delta_outside_zero_to_one_is_refused(value: float) -> None:
    with pytest.raises(ConfigError) as refused:
        SitePolicy(delta=value)
    assert str(refused.value) == f"site policy: delta {value!r} must be in (0, 1)"


@pytest.mark.parametrize("value", [None, 1e-5, 0.5, 0.999])
def test_a_delta_inside_zero_to_one_or_none_is_accepted(value: float | None) -> None:
    assert SitePolicy(delta=value).delta == value


@pytest.mark.parametrize("column", ["", "two words", 'say"', "it's", "a=b", "a,b", "back\\slash"])
def test_an_ignore_column_that_cannot_travel_in_node_config_is_refused(column: str) -> None:
    with pytest.raises(ConfigError) as refused:
        SitePolicy(ignore_columns=("smoker", column))
    assert str(refused.value) == (
        f"site policy: ignore column {column!r} may not be empty or contain spaces, "
        "quotes, commas, '=' or backslashes; rename it in the export or remove it"
    )


def test_plain_ignore_columns_are_accepted() -> None:
    assert SitePolicy(ignore_columns=("smoker", "bmi_2", "x.y")).ignore_columns == (
        "smoker",
        "bmi_2",
        "x.y",
    )


def test_the_node_config_form_names_every_field() -> None:
    assert STRICT.to_mapping() == STRICT_MAPPING


def test_the_default_node_config_form_has_delta_zero_and_no_ignore_list() -> None:
    assert SitePolicy().to_mapping() == {
        "max-epsilon": 10.0,
        "delta": 0.0,
        "require-dp": "true",
        "require-secure-aggregation": "false",
    }


def test_the_node_config_form_reads_back_to_the_same_policy() -> None:
    assert SitePolicy.from_mapping(STRICT.to_mapping()) == STRICT
    assert SitePolicy.from_mapping(SitePolicy().to_mapping()) == SitePolicy()


def test_an_empty_node_config_gives_the_default_policy() -> None:
    assert SitePolicy.from_mapping({}) == SitePolicy()


def test_keys_the_policy_does_not_know_change_nothing() -> None:
    unrelated = {"true": "false", "false": "true", "": "x,y", "DELTA": 0.5, "MAX-EPSILON": 1}
    assert SitePolicy.from_mapping(unrelated) == SitePolicy()


def test_node_config_strings_are_parsed() -> None:
    values = {
        "max-epsilon": "2.5",
        "delta": "1e-7",
        "require-dp": "FALSE",
        "require-secure-aggregation": "True",
        "ignore-columns": " smoker, bmi ,,",
    }
    assert SitePolicy.from_mapping(values) == SitePolicy(2.5, 1e-7, False, True, ("smoker", "bmi"))


@pytest.mark.parametrize("delta", [None, "", 0, 0.0])
def test_an_unset_or_zero_delta_means_the_default_delta(delta: Any) -> None:
    assert SitePolicy.from_mapping({"delta": delta}).delta is None


@pytest.mark.parametrize("delta", [1, 1.0, "1"])
def test_a_delta_of_one_in_node_config_is_refused(delta: Any) -> None:
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\)"):
        SitePolicy.from_mapping({"delta": delta})


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        *[("true", True), ("TRUE", True), ("1", True), (1, True), (True, True)],
        *[("false", False), ("0", False), ("no", False), (False, False), ("", False)],
    ],
)
def test_a_flag_is_true_only_for_true_or_one(value: Any, flag: bool) -> None:
    policy = SitePolicy.from_mapping({"require-dp": value, "require-secure-aggregation": value})
    assert (policy.require_dp, policy.require_secure_aggregation) == (flag, flag)
