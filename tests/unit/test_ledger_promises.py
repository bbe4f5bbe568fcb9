"""The privacy ledger's promises (:mod:`fedcare.privacy.ledger`).

A damaged ledger is refused with one line that names the file and the damage; the snapshot's
chain is the hash the signed head carries; a reset moves the old ledger aside under a UTC
time stamp, never over an earlier one, and is counted.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcare.chained_log import GENESIS, ChainedJsonLog, next_chain
from fedcare.errors import ExitCode
from fedcare.privacy.errors import LedgerCorruptError
from fedcare.privacy.events import PrivacyEvent
from fedcare.privacy.ledger import (
    HEAD_FILE,
    LEDGER_FILE,
    RESETS_FILE,
    LedgerReset,
    PrivacyLedger,
    reset_ledger,
)

FIX = "restore it from backup - fedcare will not train on an unknown privacy history"


def _event(round_: int) -> PrivacyEvent:
    return PrivacyEvent("run-1", round_, 1.1, 0.1, 10, 1e-5, 1.0, "2026-11-22T00:00:00Z")


def _ledger_with(folder: Path, rounds: int) -> PrivacyLedger:
    ledger = PrivacyLedger(folder)
    for round_ in range(1, rounds + 1):
        ledger.append(_event(round_))
    return ledger


def _refusal(ledger: PrivacyLedger, why: str) -> str:
    return f"{ledger.path}: privacy ledger refused: {why}; {FIX}"


# --- where it lives --------------------------------------------------------------------------


def test_the_ledger_its_head_and_its_reset_count_live_in_the_state_folder(tmp_path: Path) -> None:
    # Execute
    ledger = PrivacyLedger(tmp_path)

    # Assert
    assert ledger.state_dir == tmp_path
    assert ledger.path == tmp_path / "privacy-ledger.jsonl" == tmp_path / LEDGER_FILE
    assert ledger.head_path == tmp_path / "privacy-ledger.head.json" == tmp_path / HEAD_FILE
    assert RESETS_FILE == "privacy-ledger.resets.json"


# --- append and read -------------------------------------------------------------------------


def test_append_returns_the_whole_ledger_including_the_new_event(tmp_path: Path) -> None:
    # Prepare
    ledger = _ledger_with(tmp_path, 2)

    # Execute
    everything = ledger.append(_event(3))

    # Assert
    assert everything == (_event(1), _event(2), _event(3))
    assert PrivacyLedger(tmp_path).read() == everything


def test_each_ledger_line_is_the_event_and_its_chain(tmp_path: Path) -> None:
    # Prepare
    ledger = _ledger_with(tmp_path, 1)

    # Execute
    line = json.loads(ledger.path.read_text(encoding="utf-8"))

    # Assert: an auditor finds every field of the event next to its chain
    chain = line.pop("chain")
    assert line == _event(1).to_json()
    assert chain == next_chain(GENESIS, _event(1).to_json())


# --- refusals --------------------------------------------------------------------------------


def test_an_edited_ledger_is_refused_in_one_line_naming_the_file_the_damage_and_the_fix(
    tmp_path: Path,
) -> None:
    # Prepare
    ledger = _ledger_with(tmp_path, 3)
    lines = ledger.path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1].replace('"steps": 10', '"steps": 1')
    ledger.path.write_text("".join(lines), encoding="utf-8")

    # Execute / Assert: reading and appending say the same
    expected = _refusal(ledger, "line 2 was edited or reordered (hash chain broken)")
    for action in (ledger.read, lambda: ledger.append(_event(4)), ledger.snapshot):
        with pytest.raises(LedgerCorruptError) as info:
            action()
        assert str(info.value) == expected
        assert info.value.exit_code == ExitCode.PRIVACY


def test_a_shortened_ledger_is_refused_counting_events(tmp_path: Path) -> None:
    # Prepare
    ledger = _ledger_with(tmp_path, 3)
    lines = ledger.path.read_text(encoding="utf-8").splitlines(keepends=True)
    ledger.path.write_text("".join(lines[:2]), encoding="utf-8")

    # Execute / Assert
    with pytest.raises(LedgerCorruptError) as info:
        ledger.append(_event(4))
    assert str(info.value) == _refusal(ledger, "it holds 2 event(s) but its head recorded 3")


def _rechained(folder: Path, entries: list[dict[str, object]]) -> PrivacyLedger:
    """A ledger whose hash chain and head are intact but whose entries are written by hand."""
    log = ChainedJsonLog(folder / LEDGER_FILE, folder / HEAD_FILE)
    for entry in entries:
        log.append(entry)
    return PrivacyLedger(folder)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"steps": "ten"}, "invalid literal for int() with base 10: 'ten'"),
        ({"round": None}, "int() argument must be a string, a bytes-like object or a real number"),
        ({"kind": "laplace"}, "privacy event kind 'laplace' is unknown"),
    ],
    ids=["not-a-number", "null", "unknown-kind"],
)
def test_a_well_chained_entry_that_is_no_valid_event_is_refused_as_damage(
    tmp_path: Path, change: dict[str, object], why: str
) -> None:
    # Prepare: the chain is unkeyed, so anyone can rechain a forged entry
    ledger = _rechained(tmp_path, [_event(1).to_json(), {**_event(2).to_json(), **change}])

    # Execute / Assert
    with pytest.raises(LedgerCorruptError) as info:
        ledger.read()
    message = str(info.value)
    assert message.startswith(f"{ledger.path}: privacy ledger refused: {why}")
    assert message.endswith(f"; {FIX}") and "\n" not in message


def test_a_well_chained_event_out_of_range_is_refused_as_damage(tmp_path: Path) -> None:
    # Prepare: a forged entry with negative steps (less spending) under a valid chain
    ledger = _rechained(tmp_path, [{**_event(1).to_json(), "steps": -5}])

    # Execute / Assert
    with pytest.raises(LedgerCorruptError, match=r"privacy ledger refused: privacy event out of"):
        ledger.read()


def test_a_well_chained_entry_missing_a_field_is_refused(tmp_path: Path) -> None:
    # Prepare
    entry = _event(1).to_json()
    del entry["delta"]
    ledger = _rechained(tmp_path, [entry])

    # Execute / Assert
    with pytest.raises(LedgerCorruptError) as info:
        ledger.read()
    assert str(info.value) == _refusal(ledger, "'delta'")


# --- snapshot --------------------------------------------------------------------------------


def test_an_empty_ledger_snapshots_as_no_events_at_genesis(tmp_path: Path) -> None:
    # Execute
    events, chain = PrivacyLedger(tmp_path).snapshot()

    # Assert
    assert (events, chain) == ((), GENESIS)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_the_snapshot_chain_is_the_last_events_chain_as_the_head_records_it(
    tmp_path: Path, count: int
) -> None:
    # Prepare
    ledger = _ledger_with(tmp_path, count)
    expected = GENESIS
    for round_ in range(1, count + 1):
        expected = next_chain(expected, _event(round_).to_json())

    # Execute
    events, chain = ledger.snapshot()

    # Assert
    assert events == tuple(_event(r) for r in range(1, count + 1))
    assert chain == expected == json.loads(ledger.head_path.read_text())["chain"]


# --- the reset count -------------------------------------------------------------------------


def test_a_site_that_never_reset_has_zero_resets(tmp_path: Path) -> None:
    # Execute / Assert
    assert PrivacyLedger(tmp_path).resets() == 0
    assert _ledger_with(tmp_path, 2).resets() == 0


def test_the_reset_count_is_read_from_its_file(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / RESETS_FILE).write_text('{"resets": 4}', encoding="utf-8")

    # Execute / Assert
    assert PrivacyLedger(tmp_path).resets() == 4


@pytest.mark.usefixtures("ascii_locale")
def test_the_reset_count_file_is_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    # Prepare: an operator's note in raw UTF-8 beside the count
    text = json.dumps({"resets": 2, "note": "réinitialisé"}, ensure_ascii=False)
    (tmp_path / RESETS_FILE).write_bytes(text.encode("utf-8"))

    # Execute / Assert
    assert PrivacyLedger(tmp_path).resets() == 2


@pytest.mark.parametrize(
    "text",
    ["{not json", '{"count": 1}', '{"resets": "many"}', "[1]", "null"],
    ids=["not-json", "no-resets-key", "not-a-number", "a-list", "null"],
)
def test_an_unreadable_reset_count_is_refused_never_read_as_zero(tmp_path: Path, text: str) -> None:
    # Prepare
    (tmp_path / RESETS_FILE).write_text(text, encoding="utf-8")
    ledger = PrivacyLedger(tmp_path)

    # Execute / Assert
    with pytest.raises(LedgerCorruptError) as info:
        ledger.resets()
    assert str(info.value) == _refusal(ledger, "privacy-ledger.resets.json is unreadable")


# --- reset_ledger ----------------------------------------------------------------------------

STAMPED = re.compile(r"privacy-ledger\.reset-(\d{8}T\d{6}Z)(\.\d+)?\.jsonl")


def _stamp(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def test_a_reset_with_no_ledger_moves_nothing_and_counts_one(tmp_path: Path) -> None:
    # Execute
    reset = reset_ledger(tmp_path)

    # Assert
    assert reset == LedgerReset(moved_to=None, resets=1)
    assert reset.moved_to is None
    assert (tmp_path / RESETS_FILE).read_text(encoding="utf-8") == '{\n  "resets": 1\n}\n'
    assert PrivacyLedger(tmp_path).resets() == 1


def test_a_reset_moves_the_ledger_and_head_aside_under_a_utc_stamp_and_counts(
    tmp_path: Path,
) -> None:
    # Prepare
    ledger = _ledger_with(tmp_path, 2)
    old_ledger, old_head = ledger.path.read_bytes(), ledger.head_path.read_bytes()
    before = _stamp(time.time())

    # Execute
    first = reset_ledger(tmp_path)
    after = _stamp(time.time())

    # Assert: the old files, byte for byte, beside the new (empty) ledger
    assert first.resets == 1 and first.moved_to is not None
    assert first.moved_to.parent == tmp_path
    match = STAMPED.fullmatch(first.moved_to.name)
    assert match and match.group(2) is None
    assert before <= match.group(1) <= after
    assert first.moved_to.read_bytes() == old_ledger
    head = tmp_path / first.moved_to.name.replace(".jsonl", ".head.json")
    assert head.read_bytes() == old_head
    assert not ledger.path.exists() and not ledger.head_path.exists()
    assert ledger.read() == () and ledger.resets() == 1

    # Execute again: the count goes on
    ledger.append(_event(1))
    second = reset_ledger(tmp_path)
    assert second.resets == 2 and ledger.resets() == 2
    assert json.loads((tmp_path / RESETS_FILE).read_text(encoding="utf-8")) == {"resets": 2}


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in a time zone 14 hours ahead of UTC."""
    monkeypatch.setenv("TZ", "XYZ-14")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_the_reset_stamp_is_utc_whatever_the_local_time_zone(tmp_path: Path) -> None:
    # Prepare
    _ledger_with(tmp_path, 1)
    before = _stamp(time.time())

    # Execute
    reset = reset_ledger(tmp_path)
    after = _stamp(time.time())

    # Assert
    assert reset.moved_to is not None
    match = STAMPED.fullmatch(reset.moved_to.name)
    assert match and before <= match.group(1) <= after


def _taken(folder: Path, names: list[str]) -> dict[Path, str]:
    """Earlier resets' files for every stamp of the next minute (the reset's own is among them)."""
    now = int(time.time())
    taken = {}
    for seconds in range(now - 1, now + 60):
        for name in names:
            path = folder / name.format(stamp=_stamp(seconds))
            path.write_text(f"an earlier reset: {path.name}", encoding="utf-8")
            taken[path] = path.read_text(encoding="utf-8")
    return taken


@pytest.mark.parametrize(
    "names",
    [["privacy-ledger.reset-{stamp}.jsonl"], ["privacy-ledger.reset-{stamp}.head.json"]],
    ids=["its-ledger-name-taken", "its-head-name-taken"],
)
def test_a_reset_never_moves_over_an_earlier_reset_of_the_same_second(
    tmp_path: Path, names: list[str]
) -> None:
    # Prepare
    ledger = _ledger_with(tmp_path, 1)
    old = ledger.path.read_bytes()
    taken = _taken(tmp_path, names)

    # Execute
    reset = reset_ledger(tmp_path)

    # Assert: the first free suffix, and every earlier file untouched
    assert reset.moved_to is not None
    match = STAMPED.fullmatch(reset.moved_to.name)
    assert match and match.group(2) == ".1"
    assert reset.moved_to.read_bytes() == old
    assert (tmp_path / reset.moved_to.name.replace(".jsonl", ".head.json")).exists()
    assert {path: path.read_text(encoding="utf-8") for path in taken} == taken


def test_a_reset_takes_the_next_suffix_when_earlier_suffixes_are_taken(tmp_path: Path) -> None:
    # Prepare: the plain name's head and the .1 ledger are taken in every second
    ledger = _ledger_with(tmp_path, 1)
    taken = _taken(
        tmp_path,
        ["privacy-ledger.reset-{stamp}.head.json", "privacy-ledger.reset-{stamp}.1.jsonl"],
    )

    # Execute
    reset = reset_ledger(tmp_path)

    # Assert
    assert reset.moved_to is not None
    match = STAMPED.fullmatch(reset.moved_to.name)
    assert match and match.group(2) == ".2"
    assert ledger.resets() == 1
    assert {path: path.read_text(encoding="utf-8") for path in taken} == taken
