"""A crash in the middle of an atomic write leaves its temp file (``.<name>.<random>.tmp``);
the next append to the same log, under the log's lock, removes it (issue #12: no ``.tmp`` or
torn file is left after a fault) and nothing else."""

from __future__ import annotations

from pathlib import Path

from fedcare.chained_log import ChainedJsonLog


def test_the_next_append_removes_what_a_crashed_write_left_and_nothing_else(
    tmp_path: Path,
) -> None:
    log = ChainedJsonLog(tmp_path / "privacy-ledger.jsonl", tmp_path / "privacy-ledger.head.json")
    log.append({"round": 1})
    left = [
        tmp_path / ".privacy-ledger.jsonl.k2j4x8.tmp",  # killed before its rename
        tmp_path / ".privacy-ledger.head.json.q9w1zz.tmp",
    ]
    others = [tmp_path / ".audit-log.jsonl.a1b2c3.tmp", tmp_path / "notes.tmp"]
    for path in (*left, *others):
        path.write_text("half a line")

    entries = log.append({"round": 2})

    assert [e["round"] for e in entries] == [1, 2]
    assert [p for p in left if p.exists()] == []
    assert all(p.exists() for p in others)  # another log's writes are not this log's to touch
    assert [e["round"] for e in log.read()] == [1, 2]
