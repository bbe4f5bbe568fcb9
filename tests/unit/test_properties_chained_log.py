"""Properties of the hash-chained log (fedcare.chained_log) on real files: tampering is seen.

The promise, stated precisely (the module docstring's rules):

* With the head file intact, every change of the log's bytes - one byte changed, one byte
  deleted, lines reordered, the file truncated - either is refused (:class:`ChainBrokenError`)
  or leaves the entries the log reads exactly as they were (a space in the JSON, say). A
  reorder or a truncation is always refused.
* Every change of the head file's bytes is refused unless the head still records the same
  count and chain (again: whitespace).
* The one documented leniency: exactly one entry more than the head (a crash between the log
  write and the head write) is accepted and counted; two more are refused.

The privacy ledger and the site audit log are this log; the ledger is checked through its own
API too, since it reads the last line a second time for its signed head.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedcare.chained_log import ChainBrokenError, ChainedJsonLog, canonical
from fedcare.privacy.errors import LedgerCorruptError
from fedcare.privacy.events import PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger

# Deterministic in CI and locally: the same examples every run, bounded time.
PROPERTY = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
ENTRY = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda key: key != "chain"),
    st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=3)),
    min_size=1,
    max_size=4,
)
ENTRIES = st.lists(ENTRY, min_size=1, max_size=5)


@dataclass(frozen=True)
class WrittenLog:
    log: ChainedJsonLog
    entries: list[dict[str, Any]]
    raw: bytes  # the log file as written
    head: bytes  # the head file as written


@contextmanager
def written_log(entries: list[dict[str, Any]]) -> Iterator[WrittenLog]:
    """A real log on disk holding ``entries``, appended one by one as a site does."""
    with tempfile.TemporaryDirectory() as folder:
        log = ChainedJsonLog(Path(folder) / "log.jsonl", Path(folder) / "log.head.json")
        for entry in entries:
            log.append(entry)
        yield WrittenLog(log, entries, log.path.read_bytes(), log.head_path.read_bytes())


def _same_entries(read: list[dict[str, Any]], written: list[dict[str, Any]]) -> bool:
    """Equal as the chain sees them (canonical JSON: 1 and 1.0 and True differ)."""
    return [canonical(e) for e in read] == [canonical(e) for e in written]


def _refused_or_unchanged(log: ChainedJsonLog, written: list[dict[str, Any]]) -> None:
    try:
        read = log.read()
    except ChainBrokenError:
        return
    assert _same_entries(read, written), f"tampered log read as {read}, written {written}"


def _edits(raw: bytes, kind: str) -> st.SearchStrategy[bytes]:
    """``raw`` with one byte changed or deleted, or cut short."""
    index = st.integers(0, len(raw) - 1)
    if kind == "change":
        return st.builds(
            lambda i, step: raw[:i] + bytes([(raw[i] + step) % 256]) + raw[i + 1 :],
            index,
            st.integers(1, 255),
        )
    if kind == "delete":
        return index.map(lambda i: raw[:i] + raw[i + 1 :])
    return index.map(lambda length: raw[:length])


MUTATIONS_PER_LOG = st.integers(1, 25)  # writing a log costs fsyncs; reading it does not


@PROPERTY
@given(entries=ENTRIES, data=st.data())
def test_any_single_byte_change_of_a_log_is_refused_or_changes_no_entry(
    entries: list[dict[str, Any]], data: st.DataObject
) -> None:
    with written_log(entries) as written:
        for _ in range(data.draw(MUTATIONS_PER_LOG, label="mutations")):
            # Prepare
            mutated = data.draw(_edits(written.raw, "change"), label="log")
            # Execute
            written.log.path.write_bytes(mutated)
            # Assert
            _refused_or_unchanged(written.log, written.entries)


def test_an_edit_of_the_last_entry_that_keeps_its_chain_field_is_refused(tmp_path: Path) -> None:
    """The last line's hash is checked too, not only compared with the head."""
    log = ChainedJsonLog(tmp_path / "log.jsonl", tmp_path / "log.head.json")
    log.append({"a": 1})
    log.append({"a": 2})
    raw = log.path.read_bytes()
    log.path.write_bytes(raw[: raw.rindex(b"2, ")] + b"3" + raw[raw.rindex(b"2, ") + 1 :])

    with pytest.raises(ChainBrokenError, match="line 2 was edited"):
        log.read()


@PROPERTY
@given(entries=ENTRIES, data=st.data())
def test_any_single_byte_deletion_of_a_log_is_refused_or_changes_no_entry(
    entries: list[dict[str, Any]], data: st.DataObject
) -> None:
    with written_log(entries) as written:
        for _ in range(data.draw(MUTATIONS_PER_LOG, label="mutations")):
            written.log.path.write_bytes(data.draw(_edits(written.raw, "delete"), label="log"))

            _refused_or_unchanged(written.log, written.entries)


@PROPERTY
@given(entries=ENTRIES, data=st.data())
def test_any_truncation_of_a_log_is_refused(
    entries: list[dict[str, Any]], data: st.DataObject
) -> None:
    with written_log(entries) as written:
        for _ in range(data.draw(MUTATIONS_PER_LOG, label="mutations")):
            written.log.path.write_bytes(data.draw(_edits(written.raw, "truncate"), label="log"))

            with pytest.raises(ChainBrokenError):
                written.log.read()


@PROPERTY
@given(entries=ENTRIES, data=st.data())
def test_any_whole_line_deleted_from_a_log_is_refused(
    entries: list[dict[str, Any]], data: st.DataObject
) -> None:
    with written_log(entries) as written:
        lines = written.raw.splitlines(keepends=True)
        for index in range(len(lines)):
            written.log.path.write_bytes(b"".join(lines[:index] + lines[index + 1 :]))

            with pytest.raises(ChainBrokenError):
                written.log.read()


@PROPERTY
@given(entries=st.lists(ENTRY, min_size=2, max_size=5), data=st.data())
@example(entries=[{"a": 1}, {"a": 1}, {"a": 1}], data=None).via("equal entries reordered")
def test_any_reorder_of_a_logs_lines_is_refused(
    entries: list[dict[str, Any]], data: st.DataObject | None
) -> None:
    with written_log(entries) as written:
        lines = written.raw.splitlines(keepends=True)
        if data is None:
            orders = [[1, 0, 2], [0, 2, 1], [2, 1, 0]]
        else:
            shuffled = st.permutations(range(len(lines))).filter(lambda p: p != sorted(p))
            orders = data.draw(st.lists(shuffled, min_size=1, max_size=10), label="orders")
        for order in orders:
            written.log.path.write_bytes(b"".join(lines[i] for i in order))

            with pytest.raises(ChainBrokenError):
                written.log.read()


def _head_meaning(head: bytes) -> tuple[int, str] | None:
    try:
        parsed = json.loads(head)
        return int(parsed["entries"]), str(parsed["chain"])
    except (ValueError, KeyError, TypeError):
        return None


@PROPERTY
@given(entries=ENTRIES, data=st.data())
def test_any_change_of_the_head_that_changes_its_count_or_hash_is_refused(
    entries: list[dict[str, Any]], data: st.DataObject
) -> None:
    with written_log(entries) as written:
        head = written.head
        edits = st.one_of(_edits(head, "change"), _edits(head, "delete"), _edits(head, "truncate"))
        for _ in range(data.draw(MUTATIONS_PER_LOG, label="mutations")):
            # Prepare
            mutated = data.draw(edits, label="head")
            # Execute
            written.log.head_path.write_bytes(mutated)
            # Assert
            if _head_meaning(mutated) == _head_meaning(head):
                assert _same_entries(written.log.read(), written.entries)
            else:
                with pytest.raises(ChainBrokenError):
                    written.log.read()
        written.log.head_path.unlink()
        with pytest.raises(ChainBrokenError, match="missing"):
            written.log.read()


@PROPERTY
@given(entries=ENTRIES, extra=ENTRY)
def test_one_entry_beyond_the_head_is_a_crash_between_writes_and_is_counted(
    entries: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    with written_log(entries) as written:
        # Prepare: the log write of one more append lands, its head write does not.
        written.log.append(extra)
        written.log.head_path.write_bytes(written.head)
        # Execute
        read = written.log.read()
        # Assert
        assert _same_entries(read, [*entries, extra])


@PROPERTY
@given(entries=ENTRIES, extra=st.lists(ENTRY, min_size=2, max_size=3))
def test_two_or_more_entries_beyond_the_head_are_refused(
    entries: list[dict[str, Any]], extra: list[dict[str, Any]]
) -> None:
    with written_log(entries) as written:
        for entry in extra:
            written.log.append(entry)
        written.log.head_path.write_bytes(written.head)

        with pytest.raises(ChainBrokenError, match="more than head"):
            written.log.read()


LEDGER_EVENTS = st.lists(
    st.builds(
        PrivacyEvent,
        run_id=st.text(min_size=1, max_size=8),
        round=st.integers(1, 50),
        noise_multiplier=st.floats(0.3, 8.0),
        sample_rate=st.floats(0.001, 1.0),
        steps=st.integers(0, 500),
        delta=st.floats(1e-9, 1e-4),
        max_grad_norm=st.floats(0.1, 10.0),
        time=st.just("2026-12-01T17:00:00Z"),
    ),
    min_size=1,
    max_size=4,
)


@PROPERTY
@given(events=LEDGER_EVENTS, data=st.data())
def test_a_tampered_privacy_ledger_is_refused_or_reads_the_same_events(
    events: list[PrivacyEvent], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        ledger = PrivacyLedger(Path(folder))
        for event in events:
            ledger.append(event)
        raw = ledger.path.read_bytes()
        edits = st.one_of(_edits(raw, "change"), _edits(raw, "delete"), _edits(raw, "truncate"))
        for _ in range(data.draw(MUTATIONS_PER_LOG, label="mutations")):
            # Prepare
            mutated = data.draw(edits, label="ledger")
            # Execute
            ledger.path.write_bytes(mutated)
            # Assert
            try:
                read = ledger.read()
            except LedgerCorruptError:
                with pytest.raises(LedgerCorruptError):
                    ledger.snapshot()
                continue
            assert len(mutated) >= len(raw) - 1, "a truncated ledger was read"
            assert read == tuple(events)
