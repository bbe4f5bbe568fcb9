"""Personalization at a site (fedcare.personalization, issue #13) on the embedded hospitals.

Tuning reads only the validation part of the training rows; under DP every personalization
training is an event in the site's ledger and in its ε, and an exhausted budget stops it; the
global model (epochs 0) is always a candidate, so on validation the choice is never worse.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fedcare.config import AccountantName
from fedcare.personalization import (
    KEEP_GLOBAL,
    Candidate,
    Criterion,
    DpAccounting,
    Method,
    Personalization,
    PersonalizationSettings,
    default_grid,
    personalize,
    split_validation,
)
from fedcare.privacy.accounting import epsilon_from_events
from fedcare.privacy.budget import DpRequest, plan_round
from fedcare.privacy.errors import LedgerCorruptError
from fedcare.privacy.events import EVENT_KIND, PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.tasks import ModelName, SiteData, get_task
from fedcare.training import LocalTrainingPlan, evaluate, train_local

TASK = get_task("heart-disease")
MODEL = ModelName.LOGREG
RATE = 0.02
SETTINGS = PersonalizationSettings(default_grid(RATE, dp=False), batch_size=8, seed=0)
DP_SETTINGS = PersonalizationSettings(default_grid(RATE, dp=True), batch_size=8, seed=0)
RUN_ROUNDS = 5
DELTA = 1e-5
DP_REQUEST = DpRequest(
    target_epsilon=0.0,
    noise_multiplier=1.0,
    max_grad_norm=1.0,
    planned_rounds=RUN_ROUNDS,
    accountant=AccountantName.RDP,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """As the simulation's baselines and personalization run: tiny models, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sites(site_paths: dict[str, Path]) -> dict[str, SiteData]:
    return {name: TASK.load_site(name, path) for name, path in site_paths.items()}


@pytest.fixture(scope="module")
def global_state(sites: dict[str, SiteData]) -> dict[str, torch.Tensor]:
    """A stand-in for the federation's model: trained on the other three sites, not Cleveland."""
    others = [s for name, s in sorted(sites.items()) if name != "cleveland"]
    model = TASK.build_model(MODEL, seed=0)
    x = np.concatenate([s.x_train for s in others])
    y = np.concatenate([s.y_train for s in others])
    train_local(model, TASK.loss(), x, y, LocalTrainingPlan(10, 8, RATE, seed=1))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _validation_scores(result: Personalization) -> list[tuple[Candidate, float | None, float]]:
    return [(s.candidate, s.validation.auroc, s.validation.loss) for s in result.scores]


# -- a. tuning reads only validation rows ------------------------------------------------------


def test_corrupting_the_test_rows_changes_nothing_the_tuner_chose(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor]
) -> None:
    # Prepare: Cleveland's test rows with flipped labels and features shuffled and negated
    site = sites["cleveland"]
    rng = np.random.default_rng(7)
    corrupted = dataclasses.replace(
        site,
        x_test=-site.x_test[rng.permutation(site.n_test)],
        y_test=1.0 - site.y_test,
    )
    # Execute
    clean = personalize(TASK, MODEL, global_state, site, SETTINGS)
    dirty = personalize(TASK, MODEL, global_state, corrupted, SETTINGS)
    # Assert: the same choice, the same validation scores, the same personalized weights
    assert dirty.chosen == clean.chosen
    assert _validation_scores(dirty) == _validation_scores(clean)
    assert _same_state(dirty.state, clean.state)
    assert len(clean.scores) == len(SETTINGS.grid)  # every candidate was scored


def test_changing_the_validation_rows_changes_the_scores(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor]
) -> None:
    # Prepare: negate the features of exactly the validation part of Cleveland's training rows
    # (the split depends on the labels only, so it stays the same rows)
    site = sites["cleveland"]
    _, validation = split_validation(site.y_train, SETTINGS.validation_fraction, SETTINGS.seed)
    x_train = site.x_train.copy()
    x_train[validation] = -x_train[validation]
    negated = dataclasses.replace(site, x_train=x_train)
    # Execute
    clean = personalize(TASK, MODEL, global_state, site, SETTINGS)
    changed = personalize(TASK, MODEL, global_state, negated, SETTINGS)
    # Assert: a linear model's ranking of those rows is reversed, so is its validation AUROC
    clean_auroc = clean.global_validation.auroc
    assert clean_auroc is not None and changed.global_validation.auroc is not None
    assert changed.global_validation.auroc == pytest.approx(1.0 - clean_auroc)
    assert _validation_scores(changed) != _validation_scores(clean)


def test_changing_the_validation_labels_changes_the_choice_or_scores(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor]
) -> None:
    site = sites["cleveland"]
    _, validation = split_validation(site.y_train, SETTINGS.validation_fraction, SETTINGS.seed)
    y_train = site.y_train.copy()
    y_train[validation] = 1.0 - y_train[validation]
    flipped = dataclasses.replace(site, y_train=y_train)
    clean = personalize(TASK, MODEL, global_state, site, SETTINGS)
    changed = personalize(TASK, MODEL, global_state, flipped, SETTINGS)
    assert _validation_scores(changed) != _validation_scores(clean)


def test_the_validation_part_is_stratified_and_seeded(sites: dict[str, SiteData]) -> None:
    y = sites["va"].y_train
    fit, validation = split_validation(y, 0.25, seed=3)
    again = split_validation(y, 0.25, seed=3)
    assert np.array_equal(fit, again[0]) and np.array_equal(validation, again[1])
    assert set(fit).isdisjoint(validation) and len(fit) + len(validation) == y.shape[0]
    assert abs(y[validation].mean() - y.mean()) < 0.1  # both labels in proportion


# -- b. under DP every training is spent on the ledger ------------------------------------------


def _dp(state_dir: Path, max_epsilon: float) -> DpAccounting:
    return DpAccounting(
        request=DP_REQUEST,
        state_dir=state_dir,
        run_id="run-p13",
        first_round=RUN_ROUNDS + 1,
        delta=DELTA,
        max_epsilon=max_epsilon,
    )


def test_every_dp_personalization_training_is_a_ledger_event_and_counts_in_epsilon(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    # Prepare: VA's ledger already holds one federated round
    site = sites["va"]
    ledger = PrivacyLedger(tmp_path)
    federated = PrivacyEvent("run-p13", RUN_ROUNDS, 1.0, 0.1, 10, DELTA, 1.0, "t")
    ledger.append(federated)
    before = epsilon_from_events([federated], DELTA, AccountantName.RDP)
    # Execute
    result = personalize(TASK, MODEL, global_state, site, DP_SETTINGS, _dp(tmp_path, 100.0))
    # Assert: one event per training (each candidate fit, then the refit), past the run's rounds
    events = ledger.read()
    added = events[1:]
    fits = len(DP_SETTINGS.grid) - 1
    assert result.stopped is None and len(result.scores) == len(DP_SETTINGS.grid)
    assert result.refit == (result.chosen.epochs > 0)
    assert result.trainings == len(added) == fits + int(result.refit)
    assert [e.round for e in added] == list(range(RUN_ROUNDS + 1, RUN_ROUNDS + 1 + len(added)))
    assert all(e.run_id == "run-p13" and e.kind == EVENT_KIND and e.steps > 0 for e in added)
    assert all(e.noise_multiplier == DP_REQUEST.noise_multiplier for e in added)
    epsilons = [epsilon_from_events(events[:i], DELTA, AccountantName.RDP) for i in (1, 2, 3)]
    assert before == epsilons[0] < epsilons[1] < epsilons[2]  # each training raised ε


def test_a_rerun_of_personalization_records_new_rounds_not_repeats(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    # A simulation resumed after an interruption personalizes again on the same ledger
    dp = _dp(tmp_path, 100.0)
    first = personalize(TASK, MODEL, global_state, sites["va"], DP_SETTINGS, dp)
    second = personalize(TASK, MODEL, global_state, sites["va"], DP_SETTINGS, dp)
    rounds = [e.round for e in PrivacyLedger(tmp_path).read()]
    total = first.trainings + second.trainings
    assert rounds == list(range(RUN_ROUNDS + 1, RUN_ROUNDS + 1 + total))


def test_an_exhausted_budget_stops_personalization_and_spends_nothing_more(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    site = sites["va"]
    # Prepare: a budget that fits the first candidate's fit (1 epoch) and nothing after it
    fit, _ = split_validation(site.y_train, DP_SETTINGS.validation_fraction, DP_SETTINGS.seed)
    first = DP_SETTINGS.grid[1]
    plan = plan_round(DP_REQUEST, len(fit), DP_SETTINGS.batch_size, first.epochs, DELTA)
    planned = PrivacyEvent("x", 1, plan.noise_multiplier, plan.sample_rate, plan.steps, DELTA,
                           plan.max_grad_norm, "t")  # fmt: skip
    one_fit = epsilon_from_events([planned], DELTA, AccountantName.RDP)
    budget = 1.2 * one_fit
    # Execute
    result = personalize(TASK, MODEL, global_state, site, DP_SETTINGS, _dp(tmp_path, budget))
    # Assert: one training spent, then stopped within the budget; nothing is refit
    events = PrivacyLedger(tmp_path).read()
    assert result.stopped == "budget" and result.trainings == len(events) == 1
    assert not result.refit and len(result.scores) == 2
    assert epsilon_from_events(events, DELTA, AccountantName.RDP) <= budget


def test_a_damaged_ledger_stops_personalization_with_an_error_not_as_a_budget_stop(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    # Prepare: one recorded event, then its line edited (a lower sigma: less spending shown)
    ledger = PrivacyLedger(tmp_path)
    ledger.append(PrivacyEvent("earlier", 1, 2.0, 0.1, 10, DELTA, 1.0, "t"))
    path = next(tmp_path.glob("*.jsonl"))
    path.write_text(path.read_text().replace('"noise_multiplier": 2.0', '"noise_multiplier": 9.0'))
    # Execute / Assert: the site never trains on an unknown privacy history, and never reports
    # the damage as "stopped by the budget" with the global model kept
    with pytest.raises(LedgerCorruptError):
        personalize(TASK, MODEL, global_state, sites["va"], DP_SETTINGS, _dp(tmp_path, 10.0))


def test_no_budget_at_all_keeps_the_global_model_and_an_empty_ledger(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    result = personalize(TASK, MODEL, global_state, sites["va"], DP_SETTINGS, _dp(tmp_path, 1e-6))
    assert result.stopped == "budget" and result.chosen == KEEP_GLOBAL and result.trainings == 0
    assert _same_state(result.state, global_state)
    assert PrivacyLedger(tmp_path).read() == ()


def test_ditto_is_left_out_of_a_dp_grid(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    # DP-SGD here has no proximal term: a Ditto candidate under DP would be mislabelled
    grid = (KEEP_GLOBAL, Candidate(Method.DITTO, 1, RATE, 1.0))
    settings = dataclasses.replace(DP_SETTINGS, grid=grid)
    result = personalize(TASK, MODEL, global_state, sites["va"], settings, _dp(tmp_path, 100.0))
    assert [s.candidate for s in result.scores] == [KEEP_GLOBAL]
    assert PrivacyLedger(tmp_path).read() == ()


# -- c. epochs 0 is a candidate: never worse than global on validation -------------------------


@pytest.mark.parametrize("name", ["cleveland", "hungarian", "switzerland", "va"])
def test_the_choice_is_never_worse_than_the_global_model_on_validation(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor], name: str
) -> None:
    result = personalize(TASK, MODEL, global_state, sites[name], SETTINGS)
    chosen, global_ = result.chosen_validation, result.global_validation
    assert chosen.accuracy >= global_.accuracy  # the default criterion
    if chosen.accuracy == global_.accuracy:
        assert chosen.loss <= global_.loss
    assert result.scores[0].candidate == KEEP_GLOBAL
    by_auroc = personalize(
        TASK, MODEL, global_state, sites[name],
        dataclasses.replace(SETTINGS, criterion=Criterion.AUROC),
    )  # fmt: skip
    chosen, global_ = by_auroc.chosen_validation, by_auroc.global_validation
    if global_.auroc is not None:
        assert chosen.auroc is not None and chosen.auroc >= global_.auroc
    else:  # a one-class validation part is scored by loss
        assert chosen.loss <= global_.loss


def test_the_global_model_is_kept_when_no_candidate_beats_it(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor]
) -> None:
    # A learning rate of 0 trains to the global weights: a tie, which the global model wins
    grid = (KEEP_GLOBAL, Candidate(Method.FINETUNE, 5, 0.0))
    settings = dataclasses.replace(SETTINGS, grid=grid)
    result = personalize(TASK, MODEL, global_state, sites["cleveland"], settings)
    assert result.chosen == KEEP_GLOBAL and not result.refit
    assert _same_state(result.state, global_state)


def test_a_local_candidate_starts_from_a_fresh_model_not_the_global_weights(
    sites: dict[str, SiteData], global_state: dict[str, torch.Tensor]
) -> None:
    # learning rate 0: the candidate is exactly its starting point
    grid = (KEEP_GLOBAL, Candidate(Method.LOCAL, 1, 0.0))
    settings = dataclasses.replace(SETTINGS, grid=grid, criterion=Criterion.AUROC)
    result = personalize(TASK, MODEL, global_state, sites["cleveland"], settings)
    data = sites["cleveland"]
    _, validation = split_validation(data.y_train, SETTINGS.validation_fraction, SETTINGS.seed)
    fresh = TASK.build_model(MODEL, seed=SETTINGS.seed)
    local_score = result.scores[1]
    assert local_score.candidate.method is Method.LOCAL
    assert local_score.validation == evaluate(
        fresh, TASK.loss(), data.x_train[validation], data.y_train[validation]
    )
    assert local_score.validation != result.global_validation


def test_cross_validation_scores_on_every_training_row_exactly_once(
    sites: dict[str, SiteData],
) -> None:
    from fedcare.personalization import _splits

    y = sites["hungarian"].y_train
    splits = _splits(y, dataclasses.replace(SETTINGS, folds=4), dp=False)
    validated = np.concatenate([v for _, v in splits])
    assert len(splits) == 4 and sorted(validated.tolist()) == list(range(y.shape[0]))
    for fit, validation in splits:
        assert not set(fit.tolist()) & set(validation.tolist())
    # under DP a fold costs ε per candidate: one validation part only
    assert len(_splits(y, dataclasses.replace(SETTINGS, folds=4), dp=True)) == 1


def test_personalization_imports_neither_the_server_nor_the_simulations() -> None:
    code = (
        "import sys, fedcare.personalization\n"
        "banned = ('fedcare.server', 'fedcare.simulations')\n"
        "bad = [m for m in sys.modules if m.startswith(banned)]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
