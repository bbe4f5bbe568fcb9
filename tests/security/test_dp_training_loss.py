"""Issue #20, finding 2: a DP reply must carry no exact number (no training loss).

The attack: the coordinator (who picks the global model) wants to know whether one patient's
record is in a site's training set. It sends a model with one hidden unit that fires only on a
cholesterol far outside the training rows (standardised value > 6) and pushes that record's
logit to thousands. With the training loss in the reply, the loss is ln 2 for every other row
and thousands for that one, so the reply's loss tells the two neighbouring datasets apart with
certainty while the ledger says ε = 1. The site is run through the real ClientApp (its audit,
secure-aggregation and train handlers) on two copies of the embedded Cleveland file that differ
in one record's cholesterol.

Randomness: the batch size covers the whole training set, so Poisson sampling takes every row
(rate 1) and the one-epoch loss is computed on the coordinator's model before the single noisy
step: the leak (old code) is exact, and every assertion here is deterministic (no false failure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedcare import messages as keys
from fedcare.client.app import app
from fedcare.client.audit import audit_log
from fedcare.config import RunConfig, Weighting
from fedcare.privacy.accounting import epsilon_from_events
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.server.validation import UpdateRules
from fedcare.tasks import ModelName
from fedcare.tasks.heart_disease import (
    FEATURE_NAMES,
    MLP_HIDDEN,
    flamby_features,
    read_raw,
    split_indices,
)
from tests.flower_harness import site_context, train_message

CHOLESTEROL = FEATURE_NAMES.index("chol")
CHOLESTEROL_COLUMN = 4  # in the UCI file: age, sex, cp, trestbps, chol, ...
OUTLIER_CHOLESTEROL = "1000.0"  # the data gate's upper bound: a valid record
# Every row of a site's training set in one Poisson batch (rate 1), one epoch: one noisy step.
CONFIG = RunConfig(
    dp=True, target_epsilon=1.0, rounds=1, model=ModelName.MLP, batch_size=1024, local_epochs=1
)


def neighbours(cleveland: Path, folder: Path) -> tuple[Path, Path]:
    """The embedded Cleveland file and a copy whose first healthy training row has cholesterol
    1000 (its standardised value is about 10; every other training row's is below 3.4)."""
    features, labels = flamby_features(read_raw(cleveland))
    train, _ = split_indices(labels)
    row = int(train[np.flatnonzero(labels[train] == 0)[0]])
    lines = cleveland.read_text(encoding="utf-8").splitlines(keepends=True)
    values = lines[row].rstrip("\n").split(",")
    values[CHOLESTEROL_COLUMN] = OUTLIER_CHOLESTEROL
    lines[row] = ",".join(values) + "\n"
    with_outlier = folder / "with-outlier.data"
    with_outlier.write_text("".join(lines), encoding="utf-8")
    changed, same_labels = flamby_features(read_raw(with_outlier))
    assert (same_labels == labels).all()  # same labels, so the same train/test split
    assert [tuple(i) for i in np.argwhere(changed != features)] == [(row, CHOLESTEROL)]
    return with_outlier, cleveland


def outlier_detector() -> dict[str, torch.Tensor]:
    """The coordinator's crafted MLP: logit = 1000 * relu(standardised cholesterol - 6)."""
    hidden_weight = torch.zeros(MLP_HIDDEN, len(FEATURE_NAMES))
    hidden_weight[0, CHOLESTEROL] = 1.0
    hidden_bias = torch.zeros(MLP_HIDDEN)
    hidden_bias[0] = -6.0
    out_weight = torch.zeros(1, MLP_HIDDEN)
    out_weight[0, 0] = 1000.0
    return {"0.weight": hidden_weight, "0.bias": hidden_bias,
            "2.weight": out_weight, "2.bias": torch.zeros(1)}  # fmt: skip


def dp_round(data: Path, state: Path, model: dict[str, torch.Tensor] | None) -> Message:
    message = train_message(CONFIG, 1)
    if model is not None:
        message.content[keys.ARRAYS] = ArrayRecord(model)
    return app(message, site_context("cleveland", data, state))


def sent_metrics(reply: Message) -> dict[str, float]:
    assert not reply.has_error(), reply.error
    return {name: float(value) for name, value in reply.content[keys.METRICS].items()}  # type: ignore[arg-type]


def test_a_dp_reply_carries_only_the_ledger_epsilon_and_the_weight(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare / Execute: two DP rounds at one site, the honest global model.
    state = tmp_path / "state"
    replies = [dp_round(site_paths["cleveland"], state, None) for _ in range(2)]
    # Assert: each reply's metrics are exactly ε and the weight; ε is the ledger's, recomputed.
    ledger = PrivacyLedger(state).read()
    for count, reply in enumerate(replies, 1):
        metrics = sent_metrics(reply)
        assert set(metrics) == {keys.EPSILON, keys.WEIGHT}, metrics
        events = ledger[:count]
        ledger_epsilon = epsilon_from_events(events, events[0].delta, CONFIG.accountant)
        assert metrics[keys.EPSILON] == ledger_epsilon
        assert metrics[keys.WEIGHT] == 1.0
    # The site's own audit log agrees: no training loss ever left it.
    audited = [e["metrics"][keys.METRICS] for e in audit_log(state).read()]
    assert [set(m) for m in audited] == [{keys.EPSILON, keys.WEIGHT}] * 2


def test_neighbouring_datasets_are_not_told_apart_by_a_dp_reply(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: two neighbouring training sets, one coordinator model crafted to expose the record.
    with_outlier, without = neighbours(site_paths["cleveland"], tmp_path)
    detector = outlier_detector()
    # Execute: one DP round on each, through the real ClientApp.
    present = sent_metrics(dp_round(with_outlier, tmp_path / "a", detector))
    absent = sent_metrics(dp_round(without, tmp_path / "b", detector))
    # Assert: every number the replies carry is the same for both neighbours (the old reply's
    # training loss was ln 2 = 0.693 without the record and about 22.8 with it).
    assert present == absent, f"record present: {present}; record absent: {absent}"
    assert set(present) == {keys.EPSILON, keys.WEIGHT}


def test_the_coordinator_refuses_a_dp_update_that_carries_a_training_loss() -> None:
    rules = UpdateRules(max_update_norm=0.0, weighting=Weighting.UNIFORM, dp=True)
    model = ArrayRecord(outlier_detector())

    def reply(**metrics: float) -> RecordDict:
        return RecordDict({keys.ARRAYS: model, keys.METRICS: MetricRecord(metrics)})  # type: ignore[arg-type]

    assert rules.check(reply(**{keys.EPSILON: 0.5, keys.WEIGHT: 1.0}), model) is None
    leaky = reply(**{keys.EPSILON: 0.5, keys.WEIGHT: 1.0, keys.TRAIN_LOSS: 0.7})
    assert rules.check(leaky, model) == (
        "metrics ['epsilon', 'train-loss', 'weight'], expected ['epsilon', 'weight']"
    )
