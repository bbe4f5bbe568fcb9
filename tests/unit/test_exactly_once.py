"""Exactly-once privacy accounting at a site (fedcare.client.rounds, issue #12).

A reply lost after the ledger append is still counted; a train request that comes again for a
round the ledger holds (a retry, or a resumed run: a new Flower run id, the same run uid) is
answered from the site's reply cache without training and without a second event, or, when the
cache cannot answer it, trains again as a second, counted event. Real rounds on the embedded
Swiss hospital, real files in a temporary state dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from flwr.app import Context, Message

from fedcare import messages as keys
from fedcare.client import app as site_app
from fedcare.client import rounds
from fedcare.client.request import RoundRequest
from fedcare.client.rounds import REPLIES_DIR, RoundRefused, TrainOutcome, state_digest, train_round
from fedcare.client.site import load_site_data
from fedcare.config import AccountantName, RunConfig
from fedcare.privacy.accounting import default_delta, epsilon_from_events
from fedcare.privacy.budget import plan_round
from fedcare.privacy.events import PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger, reset_ledger
from tests.flower_harness import site_context, train_message
from tests.unit.test_site_round_promises import (
    FIXED_NOISE,
    SITE,
    TASK,
    a_global_model,
    a_request,
    a_site,
)

RUN_UID = "run-uid-1"
DP_REQUEST = a_request(dp=FIXED_NOISE, server_round=1)
PLAIN_REQUEST = a_request(server_round=1)


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[name], b[name]) for name in a)


def expected_dp_events(site_data: Path, rounds_trained: list[int]) -> list[PrivacyEvent]:
    """The events the plan says a DP round records (times left out: compared without them)."""
    rows = load_site_data(TASK, a_site(site_data, Path("unused"))).n_train
    delta = default_delta(rows)
    plan = plan_round(FIXED_NOISE, rows, 16, 2, delta)
    return [
        PrivacyEvent(
            RUN_UID, r, plan.noise_multiplier, plan.sample_rate, plan.steps, delta, 0.7, ""
        )
        for r in rounds_trained
    ]


def without_times(events: tuple[PrivacyEvent, ...]) -> list[PrivacyEvent]:
    return [PrivacyEvent(**(e.to_json() | {"time": ""})) for e in events]


# -- a lost reply is still counted -------------------------------------------------------------


def test_a_reply_lost_after_the_sites_ledger_append_is_still_counted_in_its_epsilon(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: round 1 trains and appends; its outcome is dropped (the reply never arrived).
    site = a_site(site_paths[SITE], tmp_path)
    train_round(DP_REQUEST, site, a_global_model(), RUN_UID)

    # Execute: the coordinator goes on to round 2.
    second = train_round(a_request(dp=FIXED_NOISE, server_round=2), site, a_global_model(), RUN_UID)

    # Assert: the ledger holds both rounds, and round 2's ε is that of both events.
    events = expected_dp_events(site_paths[SITE], [1, 2])
    assert without_times(PrivacyLedger(tmp_path).read()) == events
    delta = events[0].delta
    both = epsilon_from_events(events, delta, AccountantName.PRV)
    assert second.metrics[keys.EPSILON] == both
    assert both > epsilon_from_events(events[:1], delta, AccountantName.PRV)


# -- a repeat the cache can answer: no training, no new event ----------------------------------


@pytest.mark.parametrize("request_", [DP_REQUEST, PLAIN_REQUEST], ids=["dp", "non-private"])
def test_a_repeated_request_with_the_same_global_weights_is_answered_from_the_cache(
    request_: RoundRequest, tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: round 1 trained, recorded and cached (DP noise is unseeded: a retrain differs).
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)
    first = train_round(request_, site, a_global_model(), RUN_UID)

    # Execute: the same request again, from the same global weights.
    again = train_round(request_, site, a_global_model(), RUN_UID)

    # Assert: the same weights in the same order and the same metrics; still one event.
    assert same_tensors(again.state, first.state)
    assert again.metrics == first.metrics
    assert len(PrivacyLedger(tmp_path).read()) == 1


def test_a_dp_reply_from_the_cache_carries_the_epsilon_of_the_ledger_now(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: round 1 cached, then another run at the site spends more.
    site = a_site(site_paths[SITE], tmp_path)
    first = train_round(DP_REQUEST, site, a_global_model(), RUN_UID)
    train_round(DP_REQUEST, site, a_global_model(), "another-run")

    # Execute
    again = train_round(DP_REQUEST, site, a_global_model(), RUN_UID)

    # Assert: the cached weights, the ε of both events (not the cached round's).
    events = PrivacyLedger(tmp_path).read()
    assert len(events) == 2
    assert same_tensors(again.state, first.state)
    epsilon = epsilon_from_events(events, events[0].delta, AccountantName.PRV)
    assert again.metrics == {keys.EPSILON: epsilon, keys.WEIGHT: 1.0}
    assert epsilon > first.metrics[keys.EPSILON]


# -- a repeat the cache cannot answer: trained again, counted twice ----------------------------


def test_a_repeat_from_other_global_weights_trains_again_and_counts_a_second_event(
    tmp_path: Path, site_paths: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    site = a_site(site_paths[SITE], tmp_path)
    first = train_round(DP_REQUEST, site, a_global_model(seed=1), RUN_UID)

    # Execute: round 1 again, from another global model.
    with caplog.at_level(logging.WARNING, logger=rounds.__name__):
        again = train_round(DP_REQUEST, site, a_global_model(seed=2), RUN_UID)

    # Assert: two events for the one round, ε counts both, and the site's log says why.
    events = PrivacyLedger(tmp_path).read()
    assert without_times(events) == expected_dp_events(site_paths[SITE], [1, 1])
    assert again.metrics[keys.EPSILON] == epsilon_from_events(
        events, events[0].delta, AccountantName.PRV
    )
    assert again.metrics[keys.EPSILON] > first.metrics[keys.EPSILON]
    assert not same_tensors(again.state, first.state)
    assert "other global weights" in caplog.text and "second privacy event" in caplog.text


def test_a_repeat_of_another_request_trains_again(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)
    train_round(PLAIN_REQUEST, site, a_global_model(), RUN_UID)

    train_round(a_request(server_round=1, learning_rate=0.5), site, a_global_model(), RUN_UID)

    assert len(PrivacyLedger(tmp_path).read()) == 2


def test_only_the_latest_round_of_a_run_is_cached_and_an_older_repeat_trains_again(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: rounds 1 and 2 of the run.
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)
    train_round(PLAIN_REQUEST, site, a_global_model(), RUN_UID)
    train_round(a_request(server_round=2), site, a_global_model(), RUN_UID)
    (folder,) = (tmp_path / REPLIES_DIR).iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["round-2.json", "round-2.safetensors"]

    # Execute: round 1 again.
    train_round(PLAIN_REQUEST, site, a_global_model(), RUN_UID)

    # Assert: trained and counted again.
    assert [e.round for e in PrivacyLedger(tmp_path).read()] == [1, 2, 1]


def test_cached_weights_that_do_not_match_their_record_are_not_sent(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: a cached round whose weights file was replaced afterwards.
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)
    train_round(PLAIN_REQUEST, site, a_global_model(), RUN_UID)
    (weights,) = (tmp_path / REPLIES_DIR).glob("*/round-1.safetensors")
    other = train_round(PLAIN_REQUEST, site, a_global_model(seed=5), "other-run")
    (other_weights,) = set((tmp_path / REPLIES_DIR).glob("*/round-1.safetensors")) - {weights}
    weights.write_bytes(other_weights.read_bytes())

    # Execute
    again = train_round(PLAIN_REQUEST, site, a_global_model(), RUN_UID)

    # Assert: trained again rather than sending the other run's weights.
    assert not same_tensors(again.state, other.state)
    assert len(PrivacyLedger(tmp_path).read()) == 3


def test_a_cached_reply_answers_only_a_round_the_ledger_holds(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: a cached round, then a declared ledger reset (the event moved aside).
    site = a_site(site_paths[SITE], tmp_path, require_dp=False)
    train_round(PLAIN_REQUEST, site, a_global_model(), RUN_UID)
    reset_ledger(tmp_path)

    # Execute
    train_round(PLAIN_REQUEST, site, a_global_model(), RUN_UID)

    # Assert: the new ledger records the round it sent.
    assert len(PrivacyLedger(tmp_path).read()) == 1


def test_a_cached_non_private_reply_is_refused_once_the_site_requires_dp(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    lenient = a_site(site_paths[SITE], tmp_path, require_dp=False)
    train_round(PLAIN_REQUEST, lenient, a_global_model(), RUN_UID)

    with pytest.raises(RoundRefused) as refused:
        train_round(PLAIN_REQUEST, a_site(site_paths[SITE], tmp_path), a_global_model(), RUN_UID)

    assert refused.value.reason == keys.REFUSED_DP_REQUIRED
    assert len(PrivacyLedger(tmp_path).read()) == 1


def test_a_reply_that_cannot_be_cached_is_still_sent_and_counted(
    tmp_path: Path,
    site_paths: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def full_disk(path: Path, payload: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rounds, "write_json_atomic", full_disk)
    site = a_site(site_paths[SITE], tmp_path)

    with caplog.at_level(logging.WARNING, logger=rounds.__name__):
        outcome = train_round(DP_REQUEST, site, a_global_model(), RUN_UID)

    assert isinstance(outcome, TrainOutcome) and keys.EPSILON in outcome.metrics
    assert len(PrivacyLedger(tmp_path).read()) == 1
    assert "reply not cached" in caplog.text


# -- a resumed run is the same run -------------------------------------------------------------


def site_message(server_round: int, run_uid: str | None) -> Message:
    message = train_message(RunConfig(dp=True, noise_multiplier=1.0, rounds=3), server_round)
    if run_uid is not None:
        message.content.config_records[keys.CONFIG][keys.RUN_UID] = run_uid
    return message


def a_flower_run(site_data: Path, state: Path, run_id: int) -> Context:
    context = site_context(SITE, site_data, state)
    context.run_id = run_id
    return context


def arrays_of(reply: Message) -> dict[str, torch.Tensor]:
    assert not reply.has_error()
    return reply.content.array_records[keys.ARRAYS].to_torch_state_dict()


def test_a_resumed_run_is_recognised_as_the_same_run_by_its_run_uid(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: round 1 of Flower run 7, whose run uid is "7".
    first = site_app.app(site_message(1, "7"), a_flower_run(site_paths[SITE], tmp_path, 7))

    # Execute: the run resumed as Flower run 8 asks for round 1 again, with the same run uid.
    again = site_app.app(site_message(1, "7"), a_flower_run(site_paths[SITE], tmp_path, 8))

    # Assert: the cached reply, one event, keyed by the run uid.
    assert same_tensors(arrays_of(again), arrays_of(first))
    assert [(e.run_id, e.round) for e in PrivacyLedger(tmp_path).read()] == [("7", 1)]


def test_without_a_run_uid_the_site_keys_the_round_by_flowers_run_id(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    arrays_of(site_app.app(site_message(1, None), a_flower_run(site_paths[SITE], tmp_path, 7)))

    arrays_of(site_app.app(site_message(1, None), a_flower_run(site_paths[SITE], tmp_path, 8)))

    assert [(e.run_id, e.round) for e in PrivacyLedger(tmp_path).read()] == [("7", 1), ("8", 1)]


def test_a_round_request_reads_the_run_uid_when_sent() -> None:
    config = site_message(1, "run-a").content.config_records[keys.CONFIG]
    assert RoundRequest.from_record(config).run_uid == "run-a"
    del config[keys.RUN_UID]
    assert RoundRequest.from_record(config).run_uid is None
    for bad in (7, ""):
        config[keys.RUN_UID] = bad
        with pytest.raises(ValueError, match="run-uid"):
            RoundRequest.from_record(config)


# -- the digest of the incoming global weights -------------------------------------------------


def test_the_global_weights_digest_depends_on_values_not_on_order_or_layout() -> None:
    state = a_global_model()
    reordered = dict(reversed(list(state.items())))
    relaid = {k: v.t().contiguous().t() if v.dim() == 2 else v.clone() for k, v in state.items()}
    changed = {k: v.clone() for k, v in state.items()}
    first = next(iter(changed))
    changed[first].view(-1)[0] += 1e-6
    renamed = {f"x{k}": v for k, v in state.items()}

    assert state_digest(reordered) == state_digest(relaid) == state_digest(state)
    assert state_digest(changed) != state_digest(state)
    assert state_digest(renamed) != state_digest(state)
    same_bytes_other_dtype = {k: v.view(torch.int32) for k, v in state.items()}
    assert state_digest(same_bytes_other_dtype) != state_digest(state)
    same_bytes_other_shape = {k: v.reshape(-1) for k, v in state.items()}
    assert state_digest(same_bytes_other_shape) != state_digest(state)
