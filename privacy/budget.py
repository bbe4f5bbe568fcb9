"""Planning a DP round at a site and checking it against the site's own budget (pure).

The coordinator asks (target epsilon or fixed noise, planned rounds); the site decides: it
computes σ from its own training-set size, adds the planned round to its ledger's history and
refuses when the total would exceed the budget it set. Nothing the coordinator sends can raise
that budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from fedcare.config import AccountantName
from fedcare.privacy.accounting import (
    calibrate_noise_multiplier,
    epsilon_from_events,
    poisson_sample_rate,
    poisson_steps_per_epoch,
    smallest_noise_multiplier,
)
from fedcare.privacy.errors import BudgetExceededError
from fedcare.privacy.events import PrivacyEvent


@dataclass(frozen=True)
class DpRequest:
    """What the coordinator asks of every site for a DP run."""

    target_epsilon: float  # > 0: calibrate; else use noise_multiplier
    noise_multiplier: float
    max_grad_norm: float
    planned_rounds: int
    accountant: AccountantName


@dataclass(frozen=True)
class DpRoundPlan:
    """The mechanism a site will run this round."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    max_grad_norm: float


@lru_cache(maxsize=64)
def _calibrated(
    target: float, delta: float, rate: float, steps: int, accountant: AccountantName
) -> float:
    return calibrate_noise_multiplier(target, delta, rate, steps, accountant)


def plan_round(
    request: DpRequest,
    n_train: int,
    batch_size: int,
    local_epochs: int,
    delta: float,
    run_releases: Sequence[PrivacyEvent] = (),
) -> DpRoundPlan:
    """σ, sampling rate and steps of one round; σ spends the target over the planned rounds.

    ``run_releases``: what the same run already released from these rows besides its rounds
    (the federation's feature statistics, released once before round 1). The target is the
    run's total at the site, so σ is then calibrated for those releases composed with all the
    planned rounds; it stays the same every round, as they do not change after round 1.
    """
    rate = poisson_sample_rate(n_train, batch_size)
    steps = local_epochs * poisson_steps_per_epoch(rate)
    if request.target_epsilon <= 0:
        return DpRoundPlan(request.noise_multiplier, rate, steps, delta, request.max_grad_norm)
    total = steps * request.planned_rounds
    sigma = _calibrated(request.target_epsilon, delta, rate, total, request.accountant)
    if run_releases:
        sigma = _calibrated_after(
            tuple(run_releases), sigma, request.target_epsilon, delta, rate, steps,
            request.planned_rounds, request.accountant,
        )  # fmt: skip
    return DpRoundPlan(sigma, rate, steps, delta, request.max_grad_norm)


@lru_cache(maxsize=64)
def _calibrated_after(
    releases: tuple[PrivacyEvent, ...],
    sigma_alone: float,
    target: float,
    delta: float,
    rate: float,
    steps: int,
    rounds: int,
    accountant: AccountantName,
) -> float:
    """Smallest σ such that ``releases`` composed with ``rounds`` rounds of ``steps`` DP-SGD
    steps at ``rate`` stay at or under ``target``, accounted as the ledger will hold them (one
    event a round); ``sigma_alone`` (the rounds without the releases) is a lower bound. Raises
    when the releases alone leave no room."""

    def epsilon(sigma: float) -> float:
        planned = [
            PrivacyEvent("planned", r, sigma, rate, steps, delta, 1.0, "")
            for r in range(1, rounds + 1)
        ]
        return float(epsilon_from_events([*releases, *planned], delta, accountant))

    sigma = smallest_noise_multiplier(epsilon, target, sigma_alone)
    if sigma is None:
        spent = epsilon_from_events(releases, delta, accountant)
        raise BudgetExceededError(
            f"privacy budget: this run's earlier releases (epsilon {spent:.3f}) leave no room "
            f"for its rounds within the target epsilon {target:g}; raise the target"
        )
    return sigma


def check_budget(
    events: Sequence[PrivacyEvent],
    planned: PrivacyEvent,
    delta: float,
    max_epsilon: float,
    accountant: AccountantName,
) -> float:
    """ε after ``planned`` is added to ``events``; raises if that exceeds ``max_epsilon``."""
    spent = epsilon_from_events(events, delta, accountant)
    after = epsilon_from_events([*events, planned], delta, accountant)
    if after > max_epsilon or math.isnan(after):
        raise BudgetExceededError(
            f"privacy budget: this round would take epsilon from {spent:.3f} to {after:.3f}, "
            f"over the site's max-epsilon {max_epsilon:g}"
        )
    return after
