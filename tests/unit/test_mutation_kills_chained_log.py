"""The hash-chained log's promises that mutation testing found unguarded (``make mutate``).

Each test states one promise of :mod:`fedcare.chained_log`; together with tests/unit/test_ledger.py
and the property tests they kill every mutant of the module (the check in ``make test``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from fedcare.chained_log import GENESIS, ChainBrokenError, ChainedJsonLog, canonical, next_chain


def _log(tmp_path: Path) -> ChainedJsonLog:
    return ChainedJsonLog(tmp_path / "log.jsonl", tmp_path / "log.head.json", what="event")


def test_the_chain_is_sha256_of_the_previous_hash_and_the_compact_sorted_entry() -> None:
    # Prepare: an auditor recomputes the chain by hand from the documented rule.
    entry = {"b": 2, "a": [1.5, "x"], "c": None}
    by_hand = hashlib.sha256((GENESIS + '{"a":[1.5,"x"],"b":2,"c":null}').encode()).hexdigest()

    # Execute / Assert
    assert canonical(entry) == '{"a":[1.5,"x"],"b":2,"c":null}'
    assert next_chain(GENESIS, entry) == by_hand
    assert (
        next_chain(by_hand, entry)
        == hashlib.sha256((by_hand + canonical(entry)).encode()).hexdigest()
    )


def test_each_line_is_the_sorted_entry_with_its_chain_and_the_head_counts_them(
    tmp_path: Path,
) -> None:
    # Prepare
    log = _log(tmp_path)

    # Execute
    log.append({"z": 1, "a": 2})
    log.append({"k": "v"})

    # Assert: the files an auditor reads, exactly
    first = next_chain(GENESIS, {"z": 1, "a": 2})
    second = next_chain(first, {"k": "v"})
    assert log.path.read_text(encoding="utf-8") == (
        f'{{"a": 2, "chain": "{first}", "z": 1}}\n{{"chain": "{second}", "k": "v"}}\n'
    )
    assert json.loads(log.head_path.read_text(encoding="utf-8")) == {
        "entries": 2,
        "chain": second,
    }


def test_a_non_finite_value_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    # Prepare
    log = _log(tmp_path)
    log.append({"n": 1})
    before = log.path.read_bytes(), log.head_path.read_bytes()

    # Execute / Assert: strict JSON only, so the chain means the same to every reader
    with pytest.raises(ValueError):
        log.append({"epsilon": math.nan})
    assert (log.path.read_bytes(), log.head_path.read_bytes()) == before


def test_an_edited_line_is_refused_naming_its_line_number(tmp_path: Path) -> None:
    # Prepare
    log = _log(tmp_path)
    for n in range(3):
        log.append({"n": n})
    lines = log.path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1].replace('"n": 1', '"n": 7')
    log.path.write_text("".join(lines), encoding="utf-8")

    # Execute / Assert
    with pytest.raises(ChainBrokenError) as info:
        log.read()
    assert str(info.value) == "line 2 was edited or reordered (hash chain broken)"


def test_a_line_that_is_not_an_entry_is_refused_naming_its_line_and_the_log(
    tmp_path: Path,
) -> None:
    # Prepare
    log = _log(tmp_path)
    log.append({"n": 0})
    log.path.write_text(log.path.read_text(encoding="utf-8") + "[1, 2]\n", encoding="utf-8")

    # Execute / Assert
    with pytest.raises(ChainBrokenError, match=r"^line 2 is not a valid event \("):
        log.read()


def test_a_byte_that_is_not_utf8_is_refused_as_damage_not_a_crash(tmp_path: Path) -> None:
    # Prepare
    log = _log(tmp_path)
    log.append({"site": "va"})
    data = log.path.read_bytes()
    log.path.write_bytes(data.replace(b"va", b"v\xff"))

    # Execute / Assert
    with pytest.raises(ChainBrokenError, match="line 1 was edited"):
        log.read()


def test_a_torn_last_line_is_refused_and_an_empty_log_file_is_no_tear(tmp_path: Path) -> None:
    # Prepare
    log = _log(tmp_path)
    log.path.write_bytes(b"")

    # Execute / Assert: an empty file is an empty log (its head is absent too)
    assert log.read() == []
    log.append({"n": 0})
    log.path.write_bytes(log.path.read_bytes()[:-1])
    with pytest.raises(ChainBrokenError) as info:
        log.read()
    assert str(info.value) == "its last line is incomplete (torn write)"


def test_a_log_whose_head_file_is_gone_is_refused(tmp_path: Path) -> None:
    # Prepare
    log = _log(tmp_path)
    log.append({"n": 0})
    log.head_path.unlink()

    # Execute / Assert
    with pytest.raises(ChainBrokenError) as info:
        log.read()
    assert str(info.value) == "log.head.json is missing"


def test_an_unreadable_head_is_refused_by_name(tmp_path: Path) -> None:
    # Prepare
    log = _log(tmp_path)
    log.append({"n": 0})
    log.head_path.write_text('{"entries": "one", "chain": "x"}', encoding="utf-8")

    # Execute / Assert
    with pytest.raises(ChainBrokenError) as info:
        log.read()
    assert str(info.value) == "log.head.json is unreadable"


def test_refusals_for_count_and_hash_say_how_the_log_and_head_disagree(tmp_path: Path) -> None:
    # Prepare
    log = _log(tmp_path)
    for n in range(3):
        log.append({"n": n})
    head = json.loads(log.head_path.read_text(encoding="utf-8"))

    # Execute / Assert: fewer entries than the head
    log.head_path.write_text(json.dumps({**head, "entries": 4}), encoding="utf-8")
    with pytest.raises(ChainBrokenError) as fewer:
        log.read()
    assert str(fewer.value) == "it holds 3 event(s) but its head recorded 4"

    # another chain at the head's count
    log.head_path.write_text(json.dumps({**head, "chain": GENESIS}), encoding="utf-8")
    with pytest.raises(ChainBrokenError) as other:
        log.read()
    assert str(other.value) == "its events disagree with the head's hash"

    # two entries beyond the head
    log.head_path.write_text(json.dumps({**head, "entries": 1, "chain": _chain_at(log, 1)}))
    with pytest.raises(ChainBrokenError) as more:
        log.read()
    assert str(more.value) == "it holds 3 event(s), more than head 1 + 1"


def test_the_head_records_the_count_and_last_chain_after_every_append(tmp_path: Path) -> None:
    # Prepare
    log = _log(tmp_path)

    for n in range(1, 4):
        # Execute
        entries = log.append({"n": n})

        # Assert
        assert entries == [{"n": k} for k in range(1, n + 1)]
        head = json.loads(log.head_path.read_text(encoding="utf-8"))
        assert head == {"entries": n, "chain": _chain_at(log, n)}


def _chain_at(log: ChainedJsonLog, count: int) -> str:
    line = log.path.read_text(encoding="utf-8").splitlines()[count - 1]
    return str(json.loads(line)["chain"])


def test_an_append_gives_up_when_another_writer_holds_the_log_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a stuck writer holds the log; the wait is shortened from 120 s to 0.2 s
    from fedcare import chained_log
    from fedcare.locking import LockTimeoutError, file_lock

    log = _log(tmp_path)
    log.append({"n": 0})
    monkeypatch.setattr(chained_log, "APPEND_LOCK_TIMEOUT_S", 0.2)

    # Execute / Assert: the append raises instead of waiting for ever, and writes nothing
    with file_lock(log.lock_path), pytest.raises(LockTimeoutError):
        log.append({"n": 1})
    assert log.read() == [{"n": 0}]
