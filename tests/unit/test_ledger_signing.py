"""Signed ledger heads (site side), the coordinator's memory of them, ledger resets, and the
metric rules every reply must pass."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from flwr.app import ConfigRecord

from fedcare import messages as keys
from fedcare.atomic import write_json_atomic
from fedcare.errors import ConfigError
from fedcare.privacy.events import PrivacyEvent
from fedcare.privacy.ledger import LEDGER_FILE, PrivacyLedger, reset_ledger
from fedcare.privacy.ledger_signing import (
    LedgerHead,
    LedgerSignatureError,
    current_head,
    load_private_key,
    load_public_key,
    sign_head,
    verify_head,
)
from fedcare.server.ledger_heads import NO_HEAD, LedgerHeads, went_back
from fedcare.server.tracking import RoundRecord
from fedcare.server.validation import metric_problem
from tests.inprocess_federation import site_keys


def event(round_: int, sigma: float = 1.0) -> PrivacyEvent:
    return PrivacyEvent("run", round_, sigma, 0.05, 20, 1e-5, 1.0, "2026-01-01T00:00:00Z")


def signed(state: Path, key: Path, site: str = "cleveland") -> ConfigRecord:
    text, signature = sign_head(current_head(state, site), load_private_key(key))
    return ConfigRecord({keys.LEDGER_HEAD: text, keys.LEDGER_SIGNATURE: signature})


def test_a_signed_head_verifies_and_any_change_is_one_opaque_error(tmp_path: Path) -> None:
    private, public = site_keys(tmp_path, "cleveland")
    _, other_public = site_keys(tmp_path, "other")
    PrivacyLedger(tmp_path / "state").append(event(1))
    head = current_head(tmp_path / "state", "cleveland")
    text, signature = sign_head(head, load_private_key(private))

    assert verify_head(text, signature, load_public_key(public)) == head
    assert head.entries == 1 and 0 < head.epsilon < math.inf and head.resets == 0
    forged = text.replace('"entries":1', '"entries":9')
    for args in [(forged, signature, public), (text, signature, other_public)]:
        with pytest.raises(LedgerSignatureError, match=r"^ledger head signature invalid$"):
            verify_head(args[0], args[1], load_public_key(args[2]))


def test_a_non_private_ledger_signs_an_infinite_epsilon_as_strict_json(tmp_path: Path) -> None:
    PrivacyLedger(tmp_path).append(
        PrivacyEvent("run", 1, 0.0, 1.0, 0, 0.0, 0.0, "t", kind="non-private")
    )
    head = current_head(tmp_path, "va")
    assert json.loads(head.canonical())["epsilon"] == "inf"
    assert LedgerHead.from_json(json.loads(head.canonical())).epsilon == math.inf


def test_the_coordinator_refuses_a_head_that_went_back_unless_a_reset_was_declared(
    tmp_path: Path,
) -> None:
    private, public = site_keys(tmp_path, "cleveland")
    state = tmp_path / "state"
    store = tmp_path / "coordinator" / "ledger-heads.json"
    for round_ in (1, 2):
        PrivacyLedger(state).append(event(round_))
    assert (
        LedgerHeads(store, {"cleveland": public}).check("cleveland", signed(state, private)) is None
    )

    (state / LEDGER_FILE).unlink()
    (state / "privacy-ledger.head.json").unlink()
    heads = LedgerHeads(store, {"cleveland": public})  # a new run: read back from disk
    reason = heads.check("cleveland", signed(state, private))
    assert (
        reason == "ledger went back: its ledger holds 0 event(s), 2 before, with no declared reset"
    )

    reset = reset_ledger(state)
    assert reset.resets == 1 and reset.moved_to is None  # nothing left to move aside
    assert heads.check("cleveland", signed(state, private)) is None
    assert heads.latest("cleveland") == LedgerHead.from_json(
        json.loads(store.read_text())["cleveland"]["head"]
    )


def test_a_same_length_ledger_with_another_chain_or_lower_epsilon_went_back() -> None:
    before = LedgerHead("va", 2, "a" * 64, 1.0, 0, "t")
    assert went_back(before, LedgerHead("va", 2, "b" * 64, 1.0, 0, "t")) == (
        "its ledger was replaced (same length, another hash chain)"
    )
    assert "ε is 0.5, 1 before" in str(
        went_back(before, LedgerHead("va", 3, "c" * 64, 0.5, 0, "t"))
    )
    assert went_back(before, LedgerHead("va", 3, "c" * 64, 1.2, 0, "t")) is None


def test_missing_or_foreign_heads_are_refused(tmp_path: Path) -> None:
    private, public = site_keys(tmp_path, "cleveland")
    heads = LedgerHeads(tmp_path / "heads.json", {"cleveland": public, "va": public})
    assert heads.check("cleveland", None) == NO_HEAD
    assert heads.check("cleveland", ConfigRecord({keys.LEDGER_HEAD: "{}"})) == NO_HEAD
    # va's registered key signed it, but the head says cleveland: not va's statement
    assert "signed for site 'cleveland'" in str(heads.check("va", signed(tmp_path, private)))


def test_an_unreadable_heads_file_is_never_read_as_no_heads(tmp_path: Path) -> None:
    store = tmp_path / "ledger-heads.json"
    store.write_text("{not json")
    with pytest.raises(ConfigError, match="ledger heads are unreadable"):
        LedgerHeads(store, {})


def test_a_reset_moves_the_old_ledger_aside_and_counts(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path)
    ledger.append(event(1))
    first = reset_ledger(tmp_path)
    ledger.append(event(1))
    second = reset_ledger(tmp_path)

    assert (first.resets, second.resets) == (1, 2)
    assert first.moved_to and second.moved_to and first.moved_to != second.moved_to
    for moved in (first.moved_to, second.moved_to):
        assert len(moved.read_text().splitlines()) == 1
        assert Path(str(moved).removesuffix(".jsonl") + ".head.json").exists()
    assert ledger.read() == () and ledger.resets() == 2


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [
        ({keys.EVAL_AUROC: math.nan, keys.EVAL_ACCURACY: 0.5}, None),  # AUROC: single class
        ({keys.EVAL_ACCURACY: math.nan}, "'eval-accuracy' = nan"),
        ({keys.EVAL_ACCURACY: 1.01}, "'eval-accuracy' = 1.01"),
        ({keys.EVAL_AUROC: -0.1}, "'eval-auroc' = -0.1"),
        ({keys.TRAIN_LOSS: math.inf}, "'train-loss' = inf"),
        ({keys.EPSILON: -1.0}, "'epsilon' = -1.0"),
        ({keys.WEIGHT: True}, "'weight' is not a number"),
        ({"train-loss-exact": 0.1}, "not on the allow-list"),
    ],
)
def test_every_metric_must_be_a_finite_number_in_its_range(
    metrics: dict[str, object], problem: str | None
) -> None:
    found = metric_problem(metrics)
    assert found is None if problem is None else problem in str(found)


def test_a_round_without_any_accepted_evaluation_is_still_strict_json(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "rounds.json", [RoundRecord(round=0, sites={}).to_json()])
    assert json.loads((tmp_path / "rounds.json").read_text())[0]["mean_accuracy"] is None
