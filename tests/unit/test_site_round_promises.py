"""What one round at a site promises (fedcare.client.rounds, fedcare.client.app).

Policy and budget are checked before the model is touched; the round trains exactly the plan the
coordinator asked for; the ledger entry is written, in UTC, before anything is returned; a round
is declined with one allow-listed reason; and a reply carries the allow-listed metrics, the
site's name and, where the site has a key, its signed ledger head. Rounds run in-process, on the
embedded Swiss hospital (the smallest), with real Flower messages where the ClientApp is called.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from flwr.app import Context, Message, MessageType

from fedcare import messages as keys
from fedcare.client import app as site_app
from fedcare.client.audit import audit_log
from fedcare.client.policy import SitePolicy
from fedcare.client.request import RoundRequest
from fedcare.client.rounds import TRAINING_LOCK_FILE, RoundRefused, train_round
from fedcare.client.site import SiteIdentity, load_site_data
from fedcare.config import AccountantName, RunConfig, Weighting
from fedcare.errors import FedcareError
from fedcare.locking import file_lock
from fedcare.privacy.accounting import default_delta, epsilon_from_events
from fedcare.privacy.budget import DpRequest, plan_round
from fedcare.privacy.events import NON_PRIVATE_KIND, PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.privacy.ledger_signing import load_public_key, verify_head
from fedcare.tasks import ModelName, get_task
from fedcare.training import LocalTrainingPlan, train_local
from tests.flower_harness import site_context, train_message
from tests.inprocess_federation import site_keys

TASK = "heart-disease"
SITE = "switzerland"
RUN_ID = "run-7"
UTC_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
FIXED_NOISE = DpRequest(
    target_epsilon=0.0,
    noise_multiplier=1.1,
    max_grad_norm=0.7,
    planned_rounds=3,
    accountant=AccountantName.PRV,
)
PLAIN = RunConfig(rounds=1)


def a_request(**changes: object) -> RoundRequest:
    base = RoundRequest(
        task=TASK,
        model=ModelName.LOGREG,
        server_round=3,
        local_epochs=2,
        batch_size=16,
        learning_rate=0.05,
        seed=11,
        weighting=Weighting.UNIFORM,
        proximal_mu=0.0,
        dp=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def a_site(data: Path, state: Path, **policy: object) -> SiteIdentity:
    return SiteIdentity(SITE, data, state, SitePolicy(**policy))  # type: ignore[arg-type]


def a_global_model(seed: int = 99) -> dict[str, torch.Tensor]:
    """A global model that is not the one the request's seed builds, so loading it matters."""
    return get_task(TASK).build_model(ModelName.LOGREG, seed=seed).state_dict()


def seconds_from_now(stamp: str) -> float:
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return abs((datetime.now(UTC) - moment).total_seconds())


@pytest.fixture
def site_in_india(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The site's clock set to UTC+05:30, so local time differs in hour and minute."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# fedcare.client.rounds: what a non-private round trains, records and returns


def test_a_non_private_round_trains_exactly_the_plan_the_coordinator_asked_for(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: FedProx at mu 0.5, two epochs; the reference trains the same plan by hand.
    request = a_request(proximal_mu=0.5)
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)
    global_state = a_global_model()
    task = get_task(TASK)
    data = load_site_data(TASK, site)
    reference = task.build_model(ModelName.LOGREG, seed=0)
    reference.load_state_dict(global_state)
    plan = LocalTrainingPlan(2, 16, 0.05, request.shuffle_seed(SITE), proximal_mu=0.5)
    loss = train_local(reference, task.loss(), data.x_train, data.y_train, plan, global_state)

    # Execute
    outcome = train_round(request, site, global_state, RUN_ID)

    # Assert: same weights, same loss, uniform weight 1.
    assert outcome.metrics == {keys.TRAIN_LOSS: loss, keys.WEIGHT: 1.0}
    assert outcome.state.keys() == reference.state_dict().keys()
    for name, value in reference.state_dict().items():
        assert torch.equal(outcome.state[name], value), name


def test_examples_weighting_reports_the_training_rows_rounded_to_a_bucket(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)
    rows = load_site_data(TASK, site).n_train

    outcome = train_round(a_request(weighting=Weighting.EXAMPLES), site, a_global_model(), RUN_ID)

    assert outcome.metrics[keys.WEIGHT] == keys.bucket_count(rows)
    assert outcome.metrics[keys.WEIGHT] not in (1.0, 2.0)


def test_a_non_private_round_is_in_the_ledger_as_a_non_private_release_before_it_returns(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)

    train_round(a_request(), site, a_global_model(), RUN_ID)

    (event,) = PrivacyLedger(tmp_path).read()
    assert UTC_STAMP.fullmatch(event.time) and seconds_from_now(event.time) < 300
    assert event == PrivacyEvent(
        RUN_ID, 3, 0.0, 1.0, 0, 0.0, 0.0, event.time, kind=NON_PRIVATE_KIND
    )
    assert epsilon_from_events([event], 1e-5) == math.inf


@pytest.mark.usefixtures("site_in_india")
def test_the_ledger_time_is_utc_whatever_the_sites_time_zone(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)

    train_round(a_request(), site, a_global_model(), RUN_ID)

    (event,) = PrivacyLedger(tmp_path).read()
    assert UTC_STAMP.fullmatch(event.time)
    assert seconds_from_now(event.time) < 300  # local time would be 5 h 30 min off


def test_a_site_that_requires_dp_refuses_a_non_private_round_before_training(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    site = a_site(site_paths[SITE], tmp_path)  # require_dp defaults to True

    with pytest.raises(RoundRefused) as refused:
        train_round(a_request(), site, a_global_model(), RUN_ID)

    assert refused.value.reason == keys.REFUSED_DP_REQUIRED == "dp-required"
    assert str(refused.value) == "site policy requires DP training"
    assert PrivacyLedger(tmp_path).read() == ()


def test_a_global_model_with_a_parameter_the_model_lacks_is_refused_before_training(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)
    foreign = a_global_model() | {"backdoor.weight": torch.zeros(3)}

    with pytest.raises(RuntimeError, match=r"Unexpected key.*backdoor\.weight"):
        train_round(a_request(), site, foreign, RUN_ID)

    assert PrivacyLedger(tmp_path).read() == ()


# fedcare.client.rounds: DP rounds


def test_a_dp_round_records_the_planned_mechanism_and_replies_the_ledger_epsilon(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: fixed noise, PRV accountant, the site's default delta.
    site = a_site(site_paths[SITE], tmp_path)
    rows = load_site_data(TASK, site).n_train
    delta = default_delta(rows)
    plan = plan_round(FIXED_NOISE, rows, 16, 2, delta)

    # Execute
    outcome = train_round(a_request(dp=FIXED_NOISE), site, a_global_model(), RUN_ID)

    # Assert: the ledger holds the mechanism that ran; the reply its PRV epsilon and weight.
    (event,) = PrivacyLedger(tmp_path).read()
    assert UTC_STAMP.fullmatch(event.time) and seconds_from_now(event.time) < 300
    assert event == PrivacyEvent(
        RUN_ID, 3, plan.noise_multiplier, plan.sample_rate, plan.steps, delta, 0.7, event.time
    )
    epsilon = epsilon_from_events([event], delta, AccountantName.PRV)
    assert epsilon != epsilon_from_events([event], delta, AccountantName.RDP)
    assert outcome.metrics == {keys.EPSILON: epsilon, keys.WEIGHT: 1.0}
    assert outcome.state.keys() == a_global_model().keys()


def test_a_site_calibrates_sigma_for_the_target_at_its_own_policy_delta(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    target = DpRequest(8.0, 1.1, 0.7, planned_rounds=1, accountant=AccountantName.RDP)
    site = a_site(site_paths[SITE], tmp_path, delta=1e-6)
    rows = load_site_data(TASK, site).n_train

    train_round(a_request(dp=target, local_epochs=1), site, a_global_model(), RUN_ID)

    (event,) = PrivacyLedger(tmp_path).read()
    assert event.delta == 1e-6
    assert event.noise_multiplier == plan_round(target, rows, 16, 1, 1e-6).noise_multiplier
    assert event.noise_multiplier != target.noise_multiplier  # calibrated, not the fixed sigma


def test_a_round_over_the_sites_budget_is_refused_with_the_spending_and_nothing_recorded(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: a budget between one round's epsilon and two rounds'.
    fixed = dataclasses.replace(FIXED_NOISE, accountant=AccountantName.RDP)
    site = a_site(site_paths[SITE], tmp_path)
    rows = load_site_data(TASK, site).n_train
    delta = default_delta(rows)
    plan = plan_round(fixed, rows, 16, 2, delta)
    one = PrivacyEvent(
        RUN_ID, 1, plan.noise_multiplier, plan.sample_rate, plan.steps, delta, 0.7, "t"
    )
    spent = epsilon_from_events([one], delta, AccountantName.RDP)
    after = epsilon_from_events([one, one], delta, AccountantName.RDP)
    budget = round((spent + after) / 2, 3)
    site = a_site(site_paths[SITE], tmp_path, max_epsilon=budget)
    train_round(a_request(dp=fixed, server_round=1), site, a_global_model(), RUN_ID)

    # Execute
    with pytest.raises(RoundRefused) as refused:
        train_round(a_request(dp=fixed, server_round=2), site, a_global_model(), RUN_ID)

    # Assert
    assert refused.value.reason == keys.REFUSED_BUDGET == "privacy-budget-exhausted"
    assert str(refused.value) == (
        f"privacy budget: this round would take epsilon from {spent:.3f} to {after:.3f}, "
        f"over the site's max-epsilon {budget:g}"
    )
    assert [e.round for e in PrivacyLedger(tmp_path).read()] == [1]


def test_a_negative_noise_multiplier_is_refused_before_training_naming_the_run_and_round(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    site = a_site(site_paths[SITE], tmp_path)
    rows = load_site_data(TASK, site).n_train
    delta = default_delta(rows)
    plan = plan_round(FIXED_NOISE, rows, 16, 2, delta)
    hostile = dataclasses.replace(FIXED_NOISE, noise_multiplier=-1.0)

    with pytest.raises(FedcareError) as refused:
        train_round(a_request(dp=hostile), site, a_global_model(), RUN_ID)

    assert re.fullmatch(
        re.escape(
            f"privacy event out of range: PrivacyEvent(run_id='{RUN_ID}', round=3, "
            f"noise_multiplier=-1.0, sample_rate={plan.sample_rate!r}, steps={plan.steps}, "
            f"delta={delta!r}, max_grad_norm=0.7, time='"
        )
        + UTC_STAMP.pattern
        + re.escape("', kind='dp-sgd')"),
        str(refused.value),
    )
    assert PrivacyLedger(tmp_path).read() == ()


def test_a_round_that_cannot_get_the_site_in_time_is_declined_as_busy(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: another round holds the site's training lock.
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)
    errors: list[BaseException] = []

    def second_round() -> None:
        try:
            train_round(a_request(), site, a_global_model(), RUN_ID, lock_timeout=0.3)
        except BaseException as exc:
            errors.append(exc)

    # Execute
    with file_lock(tmp_path / TRAINING_LOCK_FILE):
        started = time.monotonic()
        worker = threading.Thread(target=second_round, daemon=True)
        worker.start()
        worker.join(timeout=15)
        waited = time.monotonic() - started
        still_waiting = worker.is_alive()
    worker.join(timeout=60)

    # Assert: declined after its own timeout, naming the lock; nothing recorded.
    assert not still_waiting and waited < 10
    (error,) = errors
    assert isinstance(error, RoundRefused) and error.reason == keys.REFUSED_BUSY == "site-busy"
    assert str(error) == (
        f"another round holds the site: {tmp_path / TRAINING_LOCK_FILE}: "
        "still locked by another process after 0.3 s"
    )
    assert PrivacyLedger(tmp_path).read() == ()


# fedcare.client.app: the replies of the real ClientApp


def keyed_context(site_paths: dict[str, Path], tmp_path: Path) -> tuple[Context, Path]:
    private, public = site_keys(tmp_path / "keys", SITE)
    context = site_context(
        SITE,
        site_paths[SITE],
        tmp_path / "state",
        **{"require-dp": "false", "site-key": str(private)},
    )
    return context, public


def evaluate_message(config: RunConfig) -> Message:
    train = train_message(config, 1)
    return Message(train.content, dst_node_id=1, message_type=MessageType.EVALUATE)


def test_a_train_reply_carries_weights_allowed_metrics_the_site_and_its_signed_ledger_head(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    context, public = keyed_context(site_paths, tmp_path)
    message = train_message(PLAIN, 1)

    reply = site_app.app(message, context)

    assert not reply.has_error()
    assert reply.metadata.reply_to_message_id == message.metadata.message_id
    assert set(reply.content.metric_records[keys.METRICS]) == {keys.TRAIN_LOSS, keys.WEIGHT}
    assert reply.content.config_records[keys.SITE][keys.SITE_NAME] == SITE
    expected = get_task(TASK).build_model(PLAIN.model, seed=PLAIN.seed).state_dict().keys()
    assert reply.content.array_records[keys.ARRAYS].keys() == expected
    ledger = reply.content.config_records[keys.LEDGER]
    head = verify_head(
        str(ledger[keys.LEDGER_HEAD]), bytes(ledger[keys.LEDGER_SIGNATURE]), load_public_key(public)
    )
    assert (head.site, head.entries, head.epsilon) == (SITE, 1, math.inf)


def test_an_evaluate_reply_carries_metrics_and_the_signed_head_but_no_weights(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    context, public = keyed_context(site_paths, tmp_path)

    reply = site_app.app(evaluate_message(PLAIN), context)

    assert not reply.has_error()
    assert set(reply.content.metric_records[keys.METRICS]) == {
        keys.EVAL_LOSS, keys.EVAL_ACCURACY, keys.EVAL_AUROC, keys.WEIGHT,
    }  # fmt: skip
    assert keys.ARRAYS not in reply.content.array_records
    ledger = reply.content.config_records[keys.LEDGER]
    head = verify_head(
        str(ledger[keys.LEDGER_HEAD]), bytes(ledger[keys.LEDGER_SIGNATURE]), load_public_key(public)
    )
    assert (head.site, head.entries) == (SITE, 0)


def test_a_site_without_a_key_sends_no_ledger_head(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    context = site_context(SITE, site_paths[SITE], tmp_path, **{"require-dp": "false"})

    reply = site_app.app(train_message(PLAIN, 1), context)

    assert not reply.has_error()
    assert set(reply.content.config_records) == {keys.SITE}


def test_a_metric_off_the_allow_list_is_never_sent_and_is_named(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)

    with pytest.raises(RuntimeError) as refused:
        site_app._reply(
            train_message(PLAIN, 1), site, {keys.TRAIN_LOSS: 0.5, "n-records": 85.0}, None
        )

    assert str(refused.value) == "metric(s) ['n-records'] are not on the site's allow-list"


def test_every_reply_is_audited_and_train_mods_sit_only_in_the_train_path(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: a train mod that notes each message it sees.
    seen: list[str] = []

    def noting_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
        seen.append(msg.metadata.message_type)
        return call_next(msg, context)

    client = site_app.build_client_app(train_mods=[noting_mod])
    context = site_context(SITE, site_paths[SITE], tmp_path, **{"require-dp": "false"})

    # Execute
    train = client(train_message(PLAIN, 1), context)
    evaluation = client(evaluate_message(PLAIN), context)

    # Assert
    assert not train.has_error() and not evaluation.has_error()
    assert seen == [MessageType.TRAIN]
    audited = audit_log(tmp_path).read()
    assert [(e["message_type"], e["kind"]) for e in audited] == [
        (MessageType.TRAIN, "reply"),
        (MessageType.EVALUATE, "reply"),
    ]
