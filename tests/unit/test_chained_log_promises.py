"""More promises of the hash-chained log (:mod:`fedcare.chained_log`).

The chain is defined over strict JSON, the files are UTF-8 whatever the process locale, and a
head is an anchor for exactly what it records: one entry beyond it is a crash, never damage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedcare.chained_log import GENESIS, ChainBrokenError, ChainedJsonLog, canonical, next_chain


def _log(tmp_path: Path) -> ChainedJsonLog:
    """A log whose messages name its lines by the default word, "entry"."""
    return ChainedJsonLog(tmp_path / "log.jsonl", tmp_path / "log.head.json")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_value_that_is_not_strict_json_has_no_canonical_form_and_no_chain(value: float) -> None:
    # Execute / Assert: no reader could recompute a hash over "NaN" or "Infinity"
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        canonical({"epsilon": value})
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        next_chain(GENESIS, {"epsilon": value})


@pytest.mark.usefixtures("ascii_locale")
def test_a_log_with_raw_utf8_text_is_read_and_appended_to_under_an_ascii_locale(
    tmp_path: Path,
) -> None:
    # Prepare: the same entry spelled with a raw UTF-8 "é" instead of "\u00e9" (as a tool that
    # re-encodes JSON leaves it) keeps its chain; the head carries a raw UTF-8 note too
    log = _log(tmp_path)
    log.append({"site": "hôpital"})
    escaped = log.path.read_text(encoding="utf-8")
    assert "\\u00f4" in escaped
    log.path.write_bytes(escaped.replace("\\u00f4", "ô").encode("utf-8"))
    head = json.loads(log.head_path.read_text(encoding="utf-8"))
    log.head_path.write_bytes(json.dumps({**head, "note": "vérifié"}, ensure_ascii=False).encode())

    # Execute
    read = log.read()
    appended = log.append({"site": "clinique"})

    # Assert
    assert read == [{"site": "hôpital"}]
    assert appended == [{"site": "hôpital"}, {"site": "clinique"}]
    assert _log(tmp_path).read() == appended


def test_a_head_that_records_no_entries_anchors_an_empty_log_or_one_entry(tmp_path: Path) -> None:
    # Prepare: a head for zero entries (the genesis chain)
    log = _log(tmp_path)
    log.head_path.write_text(json.dumps({"entries": 0, "chain": GENESIS}), encoding="utf-8")

    # Execute / Assert: nothing yet
    assert log.read() == []

    # one entry beyond the head: a crash between the log write and the head write
    log.path.write_text(
        json.dumps({"n": 1, "chain": next_chain(GENESIS, {"n": 1})}) + "\n", encoding="utf-8"
    )
    assert log.read() == [{"n": 1}]


def test_a_head_two_entries_behind_is_refused_even_from_zero(tmp_path: Path) -> None:
    # Prepare
    log = _log(tmp_path)
    log.append({"n": 1})
    log.append({"n": 2})
    log.head_path.write_text(json.dumps({"entries": 0, "chain": GENESIS}), encoding="utf-8")

    # Execute / Assert
    with pytest.raises(ChainBrokenError) as info:
        log.read()
    assert str(info.value) == "it holds 2 entry(s), more than head 0 + 1"


def test_a_log_names_its_lines_entries_unless_told_otherwise(tmp_path: Path) -> None:
    # Prepare
    log = _log(tmp_path)
    log.append({"n": 1})
    log.path.write_text(log.path.read_text(encoding="utf-8") + "42\n", encoding="utf-8")

    # Execute / Assert
    with pytest.raises(ChainBrokenError, match=r"^line 2 is not a valid entry \("):
        log.read()
