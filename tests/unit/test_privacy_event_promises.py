"""A privacy event is immutable, range-checked data (:mod:`fedcare.privacy.events`).

The ledger stores what a release did, never a running epsilon, so every field must survive the
trip through JSON with its type, and an event that could not have happened is refused when it
is made, naming what is wrong.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from fedcare.errors import FedcareError
from fedcare.privacy.events import EVENT_KIND, NON_PRIVATE_KIND, PrivacyEvent

FIELDS: dict[str, Any] = {
    "run_id": "run-7",
    "round": 3,
    "noise_multiplier": 1.1,
    "sample_rate": 0.02,
    "steps": 50,
    "delta": 1e-5,
    "max_grad_norm": 1.0,
    "time": "2026-11-22T10:00:00Z",
}


def _event(**changes: Any) -> PrivacyEvent:
    return PrivacyEvent(**{**FIELDS, **changes})


def test_both_kinds_of_release_are_events_and_dp_sgd_is_the_default() -> None:
    # Execute
    private = _event()
    non_private = _event(kind=NON_PRIVATE_KIND, noise_multiplier=0.0)

    # Assert
    assert (private.kind, non_private.kind) == ("dp-sgd", "non-private")
    assert EVENT_KIND == "dp-sgd" and NON_PRIVATE_KIND == "non-private"


def test_an_unknown_kind_of_release_is_refused_naming_the_kind() -> None:
    # Execute / Assert
    with pytest.raises(FedcareError) as info:
        _event(kind="laplace")
    assert str(info.value) == "privacy event kind 'laplace' is unknown"


@pytest.mark.parametrize(
    "edge",
    [
        {"steps": 0},
        {"sample_rate": 0.0},
        {"sample_rate": 1.0},
        {"noise_multiplier": 0.0},
        {"noise_multiplier": 0.5},
    ],
    ids=["no-steps", "rate-0", "rate-1", "no-noise", "noise-below-1"],
)
def test_the_edges_of_each_range_are_valid_events(edge: dict[str, Any]) -> None:
    # Execute
    event = _event(**edge)

    # Assert
    assert dataclasses.asdict(event) == {**FIELDS, **edge, "kind": "dp-sgd"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", -1),
        ("sample_rate", -0.01),
        ("sample_rate", 1.01),
        ("sample_rate", 1.5),
        ("noise_multiplier", -0.1),
    ],
)
def test_a_value_out_of_range_is_refused_on_its_own_and_the_message_shows_the_event(
    field: str, value: float
) -> None:
    # Execute / Assert: every other field is valid, so this value alone is refused
    with pytest.raises(FedcareError) as info:
        _event(**{field: value})
    message = str(info.value)
    assert message.startswith("privacy event out of range: PrivacyEvent(run_id='run-7', ")
    assert f"{field}={value!r}" in message


def test_an_event_is_immutable() -> None:
    # Prepare
    event = _event()

    # Execute / Assert
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.steps = 0  # type: ignore[misc]


def test_to_json_is_every_field_by_name() -> None:
    # Execute
    payload = _event(kind=NON_PRIVATE_KIND).to_json()

    # Assert
    assert payload == {**FIELDS, "kind": "non-private"}


@pytest.mark.parametrize("kind", [EVENT_KIND, NON_PRIVATE_KIND])
def test_an_event_round_trips_through_json_unchanged(kind: str) -> None:
    # Prepare
    event = _event(kind=kind)

    # Execute
    again = PrivacyEvent.from_json(event.to_json())

    # Assert
    assert again == event and again.kind == kind


def test_from_json_gives_every_field_its_declared_type() -> None:
    # Prepare: a hand-written ledger line with numbers as strings and ints where floats belong
    payload = {
        "run_id": 42,
        "round": "3",
        "noise_multiplier": 1,
        "sample_rate": "0.5",
        "steps": "50",
        "delta": 0,
        "max_grad_norm": 2,
        "time": 20261122,
        "kind": "non-private",
    }

    # Execute
    event = PrivacyEvent.from_json(payload)

    # Assert: the exact values, with the exact types the accountant expects
    expected = {
        "run_id": ("42", str),
        "round": (3, int),
        "noise_multiplier": (1.0, float),
        "sample_rate": (0.5, float),
        "steps": (50, int),
        "delta": (0.0, float),
        "max_grad_norm": (2.0, float),
        "time": ("20261122", str),
        "kind": ("non-private", str),
    }
    assert {
        name: (getattr(event, name), type(getattr(event, name))) for name in expected
    } == expected


@pytest.mark.parametrize("missing", [*FIELDS, "kind"])
def test_a_json_event_missing_a_field_is_refused_naming_the_field(missing: str) -> None:
    # Prepare
    payload = {**FIELDS, "kind": "dp-sgd"}
    del payload[missing]

    # Execute / Assert
    with pytest.raises(KeyError) as info:
        PrivacyEvent.from_json(payload)
    assert info.value.args == (missing,)
