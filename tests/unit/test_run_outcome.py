"""Whether a run trained, per site, from its round records: a run in which no site trained in any
round is told apart from one where some did, with one line per idle site saying why and what to
do. The records are real ``rounds.json`` files of ``fedcare simulate`` runs (two sites; floats
rounded, timestamps dropped)."""

from __future__ import annotations

import copy
import json
from typing import Any

from fedcare import messages as keys
from fedcare.run_outcome import HINTS, run_outcome

# --dp --target-epsilon 1 --site-budget cleveland=0.01 --site-budget va=0.01, 1 round
ALL_REFUSED: list[dict[str, Any]] = json.loads(
    '[{"epsilon": {}, "mean_accuracy": 0.471, "refused": {}, "rejected": {}, "round": 0, '
    '"sites": {"cleveland": {"accuracy": 0.519, "auroc": 0.562, "loss": 0.696}, "va": '
    '{"accuracy": 0.422, "auroc": 0.546, "loss": 0.858}}, "train_loss": {}}, {"epsilon": {}, '
    '"mean_accuracy": 0.471, "refused": {"cleveland": "privacy-budget-exhausted", "va": '
    '"privacy-budget-exhausted"}, "rejected": {}, "round": 1, "sites": {"cleveland": '
    '{"accuracy": 0.519, "auroc": 0.562, "loss": 0.696}, "va": {"accuracy": 0.422, "auroc": '
    '0.546, "loss": 0.858}}, "train_loss": {}}]'
)
# --dp --target-epsilon 1 --site-budget va=0.01, 2 rounds: cleveland trains under DP, va refuses
VA_REFUSED: list[dict[str, Any]] = json.loads(
    '[{"epsilon": {}, "mean_accuracy": 0.471, "refused": {}, "rejected": {}, "round": 0, '
    '"sites": {"cleveland": {"accuracy": 0.519, "auroc": 0.562, "loss": 0.696}, "va": '
    '{"accuracy": 0.422, "auroc": 0.546, "loss": 0.858}}, "train_loss": {}}, {"epsilon": '
    '{"cleveland": 0.784}, "mean_accuracy": 0.45, "refused": {"va": "privacy-budget-exhausted"}, '
    '"rejected": {}, "round": 1, "sites": {"cleveland": {"accuracy": 0.567, "auroc": 0.625, '
    '"loss": 0.664}, "va": {"accuracy": 0.333, "auroc": 0.569, "loss": 0.851}}, "train_loss": '
    '{}}, {"epsilon": {"cleveland": 0.994}, "mean_accuracy": 0.519, "refused": {"va": '
    '"privacy-budget-exhausted"}, "rejected": {}, "round": 2, "sites": {"cleveland": '
    '{"accuracy": 0.683, "auroc": 0.731, "loss": 0.619}, "va": {"accuracy": 0.356, "auroc": '
    '0.646, "loss": 0.842}}, "train_loss": {}}]'
)
# --attack va=nan --strategy fedavg, 2 rounds, no DP: cleveland trains, va's updates rejected
VA_REJECTED: list[dict[str, Any]] = json.loads(
    '[{"epsilon": {}, "mean_accuracy": 0.471, "refused": {}, "rejected": {}, "round": 0, '
    '"sites": {"cleveland": {"accuracy": 0.519, "auroc": 0.562, "loss": 0.696}, "va": '
    '{"accuracy": 0.422, "auroc": 0.546, "loss": 0.858}}, "train_loss": {}}, {"epsilon": {}, '
    '"mean_accuracy": 0.634, "refused": {}, "rejected": {"va": "array \'weight\' holds NaN or '
    'Inf"}, "round": 1, "sites": {"cleveland": {"accuracy": 0.779, "auroc": 0.822, "loss": '
    '0.572}, "va": {"accuracy": 0.489, "auroc": 0.691, "loss": 0.801}}, "train_loss": '
    '{"cleveland": 0.709}}, {"epsilon": {}, "mean_accuracy": 0.632, "refused": {}, "rejected": '
    '{"va": "array \'weight\' holds NaN or Inf"}, "round": 2, "sites": {"cleveland": '
    '{"accuracy": 0.798, "auroc": 0.878, "loss": 0.513}, "va": {"accuracy": 0.467, "auroc": '
    '0.743, "loss": 0.779}}, "train_loss": {"cleveland": 0.59}}]'
)
BUDGET_LINE = (
    "every round refused: privacy-budget-exhausted — its privacy budget is spent (an earlier "
    "non-private run makes ε infinite); see 'fedcare privacy report --state {state}'"
)


def test_a_run_where_every_site_refused_every_round_trained_nothing() -> None:
    outcome = run_outcome(ALL_REFUSED)
    assert outcome.nothing_trained
    assert outcome.lines() == [
        "cleveland: " + BUDGET_LINE.format(state="<site state>"),
        "va: " + BUDGET_LINE.format(state="<site state>"),
    ]
    assert outcome.lines(lambda site: f"runs/x/sites/{site}")[1] == "va: " + BUDGET_LINE.format(
        state="runs/x/sites/va"
    )


def test_a_run_where_one_site_trained_under_dp_trained_and_names_the_other() -> None:
    outcome = run_outcome(VA_REFUSED)
    assert not outcome.nothing_trained
    assert outcome.sites["cleveland"].trained == (1, 2)  # its ε recorded: an accepted DP update
    assert outcome.lines() == ["va: " + BUDGET_LINE.format(state="<site state>")]


def test_rejected_updates_are_not_training_and_a_plain_update_is() -> None:
    outcome = run_outcome(VA_REJECTED)
    assert not outcome.nothing_trained
    assert outcome.sites["cleveland"].trained == (1, 2)  # its train loss recorded
    assert outcome.lines() == [
        "va: every update rejected (array 'weight' holds NaN or Inf) — the coordinator dropped "
        "its update (see the update rules, e.g. --max-update-norm)"
    ]
    alone = copy.deepcopy(VA_REJECTED)
    for record in alone:
        record["train_loss"].pop("cleveland", None)
        record["refused"] = {"cleveland": keys.REFUSED_BUSY} if record["round"] else {}
    assert run_outcome(alone).nothing_trained


def test_a_rejected_evaluation_alone_does_not_undo_a_round_of_training() -> None:
    records = copy.deepcopy(VA_REJECTED)
    for record in records[1:]:
        record["rejected"] = {
            "cleveland": "evaluation: the evaluation lacks loss, accuracy or AUROC"
        }
    assert run_outcome(records).sites["cleveland"].trained == (1, 2)
    records[1]["rejected"]["cleveland"] = "update norm 9 over 5; evaluation: lacks AUROC"
    assert run_outcome(records).sites["cleveland"].rejected == {1: "update norm 9 over 5"}


def test_mixed_reasons_are_each_named_on_the_sites_one_line() -> None:
    records = copy.deepcopy(ALL_REFUSED)
    records.append(copy.deepcopy(records[1]) | {"round": 2})
    records.append(copy.deepcopy(records[1]) | {"round": 3, "refused": {}})
    records[2]["refused"]["va"] = keys.REFUSED_BUSY
    (line,) = [line for line in run_outcome(records).lines() if line.startswith("va")]
    assert line == (
        "va: refused privacy-budget-exhausted in round(s) 1; refused site-busy in round(s) 2; "
        "no reply in round(s) 3 — its privacy budget is spent (an earlier non-private run makes "
        "ε infinite); see 'fedcare privacy report --state <site state>'"
    )
    assert "\n" not in line


def test_every_refusal_category_a_site_can_send_has_a_hint() -> None:
    assert set(HINTS) == set(keys.REFUSAL_CODES)
    records = copy.deepcopy(ALL_REFUSED)
    records[1]["refused"] = {"cleveland": keys.REFUSED_DP_REQUIRED, "va": "error 9999"}
    lines = run_outcome(records).lines()
    assert lines[0] == (
        "cleveland: every round refused: dp-required — the site trains only with differential "
        "privacy; run with --dp (or the site starts with --allow-non-dp)"
    )
    assert lines[1].startswith("va: every round refused: error 9999 — the site replied with an")


def test_a_site_that_never_answered_is_named() -> None:
    records = copy.deepcopy(ALL_REFUSED)
    records[1]["refused"] = {}
    assert run_outcome(records).lines()[0] == (
        "cleveland: no reply in any round — the site never answered; is it running? see "
        "'fedcare coordinator status'"
    )
