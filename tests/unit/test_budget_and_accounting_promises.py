"""Sampling rate, delta, epsilon from the ledger's events, noise calibration and a site's own
budget check, each against Opacus' accountants used directly or against hand-computed values."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from fedcare.config import AccountantName
from fedcare.privacy.accounting import (
    calibrate_noise_multiplier,
    default_delta,
    epsilon_from_events,
    poisson_sample_rate,
    poisson_steps_per_epoch,
)
from fedcare.privacy.budget import DpRequest, DpRoundPlan, check_budget, plan_round
from fedcare.privacy.errors import BudgetExceededError, PrivacyError
from fedcare.privacy.events import NON_PRIVATE_KIND, PrivacyEvent

DELTA = 1e-5


def event(
    sigma: float = 1.1, rate: float = 0.05, steps: int = 40, kind: str = "dp-sgd"
) -> PrivacyEvent:
    fields = {"run_id": "run", "round": 1, "noise_multiplier": sigma, "sample_rate": rate}
    fields |= {"steps": steps, "delta": DELTA, "max_grad_norm": 1.0, "time": "t"}
    return PrivacyEvent(**fields, kind=kind) if kind != "dp-sgd" else PrivacyEvent(**fields)


def reference_epsilon(history: list[tuple[float, float, int]], accountant: str = "rdp") -> float:
    engine = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    engine.history = list(history)
    return float(engine.get_epsilon(delta=DELTA))


# --- sampling rate, steps, delta -------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_train", "batch_size", "rate"), [(10, 3, 0.25), (1, 1, 1.0), (5, 1, 0.2), (100, 32, 0.25)]
)
def test_the_sample_rate_is_one_over_the_number_of_batches(
    n_train: int, batch_size: int, rate: float
) -> None:
    assert poisson_sample_rate(n_train, batch_size) == rate


@pytest.mark.parametrize(("n_train", "batch_size"), [(0, 3), (3, 0), (-1, -1)])
def test_an_empty_training_set_or_batch_is_refused_naming_both_values(
    n_train: int, batch_size: int
) -> None:
    expected = f"need n_train >= 1 and batch size >= 1, got {n_train}, {batch_size}"
    with pytest.raises(PrivacyError) as refused:
        poisson_sample_rate(n_train, batch_size)
    assert str(refused.value) == expected


@pytest.mark.parametrize(("rate", "steps"), [(0.25, 4), (0.3, 3), (1.0, 1), (0.1, 10)])
def test_steps_per_epoch_are_the_whole_batches_opacus_draws(rate: float, steps: int) -> None:
    assert poisson_steps_per_epoch(rate) == steps


@pytest.mark.parametrize(("n_train", "delta"), [(10, 1e-5), (50_000, 1e-5), (100_000, 5e-6)])
def test_default_delta_is_below_one_over_twice_the_training_set(n_train: int, delta: float) -> None:
    assert default_delta(n_train) == pytest.approx(delta, rel=1e-12)


# --- epsilon from events -------------------------------------------------------------------


def test_an_empty_ledger_has_spent_nothing() -> None:
    assert epsilon_from_events([], DELTA) == 0.0


def test_events_without_steps_spend_nothing() -> None:
    assert epsilon_from_events([event(steps=0), event(steps=0)], DELTA) == 0.0


@pytest.mark.parametrize("accountant", [AccountantName.RDP, AccountantName.PRV])
def test_epsilon_is_the_named_accountants_over_every_event_with_steps(
    accountant: AccountantName,
) -> None:
    events = [event(1.0, 0.05, 1), event(1.3, 0.1, 30), event(2.0, 0.05, 0)]
    expected = reference_epsilon([(1.0, 0.05, 1), (1.3, 0.1, 30)], str(accountant))
    assert epsilon_from_events(events, DELTA, accountant) == pytest.approx(expected, rel=1e-9)


def test_the_accountant_is_chosen_by_value_from_a_plain_string() -> None:
    events = [event(1.0, 0.05, 50)]
    assert epsilon_from_events(events, DELTA, "rdp") == pytest.approx(  # type: ignore[arg-type]
        reference_epsilon([(1.0, 0.05, 50)], "rdp"), rel=1e-9
    )
    assert epsilon_from_events(events, DELTA, "prv") == pytest.approx(  # type: ignore[arg-type]
        reference_epsilon([(1.0, 0.05, 50)], "prv"), rel=1e-9
    )


def test_a_single_step_event_is_counted() -> None:
    assert epsilon_from_events([event(1.0, 0.5, 1)], DELTA) > 0.0


@pytest.mark.parametrize(
    "released", [event(kind=NON_PRIVATE_KIND, sigma=1.0), event(sigma=0.0)], ids=["kind", "sigma0"]
)
def test_a_release_without_noise_makes_epsilon_infinite(released: PrivacyEvent) -> None:
    assert epsilon_from_events([event(), released, event()], DELTA) == math.inf


# --- noise calibration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "rate", "steps", "accountant"),
    [
        (2.0, 0.1, 1, AccountantName.RDP),
        (1.0, 0.05, 200, AccountantName.RDP),
        (3.0, 0.1, 50, AccountantName.PRV),
    ],
)
def test_calibrated_sigma_spends_the_target_within_the_search_tolerance(
    target: float, rate: float, steps: int, accountant: AccountantName
) -> None:
    sigma = calibrate_noise_multiplier(target, DELTA, rate, steps, accountant)
    spent = reference_epsilon([(sigma, rate, steps)], str(accountant))
    assert target - 0.01 < spent <= target


@pytest.mark.parametrize(("target", "steps"), [(0, 5), (-1.0, 5), (1.0, 0), (0.0, 0)])
def test_calibration_refuses_a_non_positive_target_or_no_steps(target: float, steps: int) -> None:
    with pytest.raises(PrivacyError) as refused:
        calibrate_noise_multiplier(target, DELTA, 0.1, steps)
    assert str(refused.value) == f"need target epsilon > 0 and steps >= 1, got {target}, {steps}"


def test_an_unreachable_target_is_refused_naming_epsilon_and_delta() -> None:
    with pytest.raises(PrivacyError) as refused:
        calibrate_noise_multiplier(1e-4, DELTA, 1.0, 1000)
    assert str(refused.value) == (
        f"cannot reach epsilon 0.0001 at delta {DELTA}: The privacy budget is too low."
    )


# --- planning a round ------------------------------------------------------------------------


def request(target: float, sigma: float = 1.3, accountant: str = "rdp") -> DpRequest:
    return DpRequest(target, sigma, 0.7, planned_rounds=5, accountant=AccountantName(accountant))


def test_a_target_epsilon_is_spread_over_every_planned_step() -> None:
    plan = plan_round(request(4.0), n_train=100, batch_size=32, local_epochs=2, delta=DELTA)
    sigma = calibrate_noise_multiplier(4.0, DELTA, 0.25, 2 * 4 * 5)
    assert plan == DpRoundPlan(sigma, 0.25, 8, DELTA, 0.7)


def test_a_target_below_one_is_still_calibrated() -> None:
    plan = plan_round(request(0.5, accountant="prv"), 100, 32, 1, DELTA)
    assert plan.noise_multiplier == calibrate_noise_multiplier(0.5, DELTA, 0.25, 20, "prv")  # type: ignore[arg-type]
    assert plan.steps == 4


def test_without_a_target_the_requested_sigma_is_used() -> None:
    plan = plan_round(request(0.0, sigma=1.3), n_train=10, batch_size=3, local_epochs=3, delta=0.01)
    assert plan == DpRoundPlan(1.3, 0.25, 12, 0.01, 0.7)


# --- the site's own budget -------------------------------------------------------------------


@pytest.mark.parametrize("accountant", [AccountantName.RDP, AccountantName.PRV])
def test_a_round_within_budget_returns_epsilon_after_it(accountant: AccountantName) -> None:
    spent, planned = [event(1.0, 0.05, 40)], event(1.2, 0.1, 20)
    after = reference_epsilon([(1.0, 0.05, 40), (1.2, 0.1, 20)], str(accountant))
    assert check_budget(spent, planned, DELTA, after + 1.0, accountant) == pytest.approx(after)


def test_a_round_that_lands_exactly_on_the_budget_is_allowed() -> None:
    spent, planned = [event(1.0, 0.05, 40)], event(1.2, 0.1, 20)
    after = epsilon_from_events([*spent, planned], DELTA)
    assert check_budget(spent, planned, DELTA, after, AccountantName.RDP) == after


@pytest.mark.parametrize("accountant", [AccountantName.RDP, AccountantName.PRV])
def test_a_round_over_budget_is_refused_with_epsilon_before_and_after(
    accountant: AccountantName,
) -> None:
    spent, planned = [event(1.0, 0.05, 40)], event(0.8, 0.1, 200)
    before = reference_epsilon([(1.0, 0.05, 40)], str(accountant))
    after = reference_epsilon([(1.0, 0.05, 40), (0.8, 0.1, 200)], str(accountant))
    with pytest.raises(BudgetExceededError) as refused:
        check_budget(spent, planned, DELTA, 2.5, accountant)
    assert str(refused.value) == (
        f"privacy budget: this round would take epsilon from {before:.3f} to {after:.3f}, "
        "over the site's max-epsilon 2.5"
    )


def test_a_non_private_round_is_refused_under_any_finite_budget() -> None:
    with pytest.raises(BudgetExceededError, match="to inf, over the site's max-epsilon 1e"):
        check_budget([event()], event(kind=NON_PRIVATE_KIND), DELTA, 1e9, AccountantName.RDP)
