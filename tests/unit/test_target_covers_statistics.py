"""A run's target ε is the run's total at each site: the federation's statistics release, made
once before round 1, counts against it, and the rounds are calibrated to what it left
(privacy.budget.plan_round, client.rounds; server.model_validation.statistics_noise)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fedcare.client.policy import SitePolicy
from fedcare.client.request import RoundRequest
from fedcare.client.rounds import RoundRefused, train_round
from fedcare.client.site import SiteIdentity, load_site_data
from fedcare.config import AccountantName, Weighting
from fedcare.feature_stats import DEFAULT_NOISE_MULTIPLIER
from fedcare.privacy.accounting import epsilon_from_events
from fedcare.privacy.budget import DpRequest, plan_round
from fedcare.privacy.errors import BudgetExceededError
from fedcare.privacy.events import GAUSSIAN_KIND, PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.server.model_validation import (
    STATISTICS_SHARE,
    statistics_noise,
    statistics_privacy,
)
from fedcare.tasks import ModelName, get_task

TASK, SITE, RUN = "heart-disease", "hungarian", "run-uid-1"
DELTA = 1e-5
ROUNDS = 4


def _release(sigma: float, run: str = RUN) -> PrivacyEvent:
    return PrivacyEvent(run, 0, sigma, 1.0, 1, DELTA, 1.0, "t", kind=GAUSSIAN_KIND)


def _rounds(plan, n: int = ROUNDS, run: str = RUN) -> list[PrivacyEvent]:
    return [
        PrivacyEvent(run, r, plan.noise_multiplier, plan.sample_rate, plan.steps, DELTA, 1.0, "t")
        for r in range(1, n + 1)
    ]


@pytest.mark.parametrize("accountant", [AccountantName.RDP, AccountantName.PRV])
def test_rounds_calibrated_after_a_release_keep_the_run_within_its_target(
    accountant: AccountantName,
) -> None:
    request = DpRequest(3.0, 0.0, 1.0, ROUNDS, accountant)
    release = _release(statistics_noise(3.0))
    alone = plan_round(request, 172, 8, 1, DELTA)
    after = plan_round(request, 172, 8, 1, DELTA, [release])
    total = epsilon_from_events([release, *_rounds(after)], DELTA, accountant)
    assert total <= 3.0
    assert total > 3.0 * 0.97  # and spends it: not a needlessly noisy model
    # calibrating the rounds as if nothing had been released overshoots the target
    assert epsilon_from_events([release, *_rounds(alone)], DELTA, accountant) > 3.0
    assert after.noise_multiplier > alone.noise_multiplier


def test_a_release_that_leaves_no_room_refuses_the_rounds() -> None:
    request = DpRequest(1.0, 0.0, 1.0, ROUNDS, AccountantName.RDP)
    with pytest.raises(BudgetExceededError, match="leave no room for its rounds"):
        plan_round(request, 172, 8, 1, DELTA, [_release(DEFAULT_NOISE_MULTIPLIER)])  # ε ≈ 1.01


def test_the_coordinator_asks_for_a_release_within_its_share_of_the_target() -> None:
    for target in (0.5, 1.0, 2.0):
        sigma = statistics_noise(target)
        epsilon = float(statistics_privacy(sigma)["epsilon_at_delta_1e-5"])
        assert epsilon <= STATISTICS_SHARE * target
        assert epsilon > 0.95 * STATISTICS_SHARE * target
    # a generous target, or no target: the sites' own floor, never less noise
    assert statistics_noise(40.0) == DEFAULT_NOISE_MULTIPLIER
    assert statistics_noise(0.0) == DEFAULT_NOISE_MULTIPLIER


def _request(dp: DpRequest) -> RoundRequest:
    return RoundRequest(
        task=TASK, model=ModelName.LOGREG, server_round=1, local_epochs=1, batch_size=8,
        learning_rate=0.05, seed=3, weighting=Weighting.UNIFORM, proximal_mu=0.0, dp=dp,
    )  # fmt: skip


def _model() -> dict[str, torch.Tensor]:
    return get_task(TASK).build_model(ModelName.LOGREG, seed=3).state_dict()


def test_a_site_counts_its_statistics_release_of_this_run_only(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    site = SiteIdentity(SITE, site_paths[SITE], tmp_path, SitePolicy(delta=DELTA))
    rows = load_site_data(TASK, site).n_train
    dp = DpRequest(2.0, 0.0, 1.0, ROUNDS, AccountantName.RDP)
    ledger = PrivacyLedger(tmp_path)
    ledger.append(_release(12.0, run="an-earlier-run"))  # another run's: its own target
    ledger.append(_release(statistics_noise(2.0)))
    train_round(_request(dp), site, _model(), RUN)
    event = ledger.read()[-1]
    expected = plan_round(dp, rows, 8, 1, DELTA, [_release(statistics_noise(2.0))])
    assert event.noise_multiplier == pytest.approx(expected.noise_multiplier)
    assert event.noise_multiplier != plan_round(dp, rows, 8, 1, DELTA).noise_multiplier
    run_events = [e for e in ledger.read() if e.run_id == RUN]
    planned = [dataclasses.replace(event, round=r) for r in range(1, ROUNDS + 1)]
    assert epsilon_from_events([run_events[0], *planned], DELTA) <= 2.0


def test_a_site_refuses_a_round_when_the_release_took_the_whole_target(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    site = SiteIdentity(SITE, site_paths[SITE], tmp_path, SitePolicy(delta=DELTA))
    PrivacyLedger(tmp_path).append(_release(DEFAULT_NOISE_MULTIPLIER))
    dp = DpRequest(1.0, 0.0, 1.0, ROUNDS, AccountantName.RDP)
    with pytest.raises(RoundRefused, match="leave no room"):
        train_round(_request(dp), site, _model(), RUN)
    assert len(PrivacyLedger(tmp_path).read()) == 1  # nothing trained, nothing recorded
