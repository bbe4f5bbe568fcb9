"""The privacy ledger: durable, hash-chained, and never read as less than was spent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcare.errors import ExitCode
from fedcare.privacy.errors import LedgerCorruptError
from fedcare.privacy.events import PrivacyEvent
from fedcare.privacy.ledger import HEAD_FILE, LEDGER_FILE, PrivacyLedger


def _event(round_: int) -> PrivacyEvent:
    return PrivacyEvent("run-1", round_, 1.1, 0.1, 10, 1e-5, 1.0, "2026-11-22T00:00:00Z")


@pytest.fixture
def ledger(tmp_path: Path) -> PrivacyLedger:
    ledger = PrivacyLedger(tmp_path)
    for round_ in (1, 2, 3):
        ledger.append(_event(round_))
    return ledger


def test_events_round_trip_in_order(ledger: PrivacyLedger) -> None:
    assert [e.round for e in PrivacyLedger(ledger.state_dir).read()] == [1, 2, 3]
    assert json.loads((ledger.state_dir / HEAD_FILE).read_text())["entries"] == 3
    assert not list(ledger.state_dir.glob(".*.tmp"))


def test_empty_state_reads_as_no_events(tmp_path: Path) -> None:
    assert PrivacyLedger(tmp_path / "new").read() == ()


def _refused(ledger: PrivacyLedger, fragment: str) -> None:
    with pytest.raises(LedgerCorruptError) as info:
        ledger.read()
    message = str(info.value)
    assert fragment in message and str(ledger.path) in message and "\n" not in message
    assert info.value.exit_code == ExitCode.PRIVACY
    with pytest.raises(LedgerCorruptError):  # appending to a damaged ledger is refused too
        ledger.append(_event(9))


def test_torn_last_line_is_refused(ledger: PrivacyLedger) -> None:
    data = ledger.path.read_bytes()
    ledger.path.write_bytes(data[: len(data) - 40])
    _refused(ledger, "incomplete")


def test_removed_last_event_is_refused(ledger: PrivacyLedger) -> None:
    lines = ledger.path.read_text().splitlines(keepends=True)
    ledger.path.write_text("".join(lines[:-1]))
    _refused(ledger, "holds 2 event(s) but its head recorded 3")


def test_edited_event_breaks_the_chain(ledger: PrivacyLedger) -> None:
    ledger.path.write_text(ledger.path.read_text().replace('"steps": 10', '"steps": 1', 1))
    _refused(ledger, "hash chain broken")


def test_deleted_ledger_with_head_left_is_refused(ledger: PrivacyLedger) -> None:
    ledger.path.unlink()
    ledger.path.write_text("")
    _refused(ledger, "head recorded 3")


def test_crash_between_ledger_and_head_counts_the_extra_event(ledger: PrivacyLedger) -> None:
    head = json.loads(ledger.head_path.read_text())
    ledger.append(_event(4))
    ledger.head_path.write_text(json.dumps(head))  # as if the process died before the head write
    assert [e.round for e in ledger.read()] == [1, 2, 3, 4]


def test_ledger_file_names() -> None:
    assert LEDGER_FILE.endswith(".jsonl") and HEAD_FILE.endswith(".json")


def test_privacy_report_prints_the_ledger_and_its_epsilon(ledger: PrivacyLedger) -> None:
    import subprocess
    import sys

    def report(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "fedcare",
            "privacy",
            "report",
            "--state",
            str(ledger.state_dir),
        ]
        return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=120)

    result = report()
    assert result.returncode == 0, result.stderr
    assert (
        "3 event(s) over 1 run(s); cumulative ε =" in result.stdout
        and "rdp accountant" in result.stdout
    )
    refused = report("--accountant", "exact")
    assert refused.returncode == 2
    assert "--accountant: unknown value 'exact'; choose one of: rdp, prv" in refused.stderr


def test_an_append_holds_the_log_lock_and_a_reader_never_creates_it(tmp_path: Path) -> None:
    from fedcare.locking import LockTimeoutError, file_lock

    ledger = PrivacyLedger(tmp_path)
    lock = tmp_path / (LEDGER_FILE + ".lock")
    assert ledger.read() == () and not lock.exists()  # an auditor's read leaves nothing behind
    ledger.append(_event(1))
    assert lock.stat().st_mode & 0o777 == 0o600
    with file_lock(lock):  # another writer holds the log: a second lock on it waits, then fails
        message = r"privacy-ledger\.jsonl\.lock: still locked"
        with pytest.raises(LockTimeoutError, match=message), file_lock(lock, timeout=0.2):
            pass
        with pytest.raises(LockTimeoutError), file_lock(lock, shared=True, timeout=0.2):
            pass  # a reader waits for the writer too
    with file_lock(lock, shared=True), file_lock(lock, shared=True, timeout=0.2):
        assert [e.round for e in ledger.read()] == [1]  # readers share the lock
