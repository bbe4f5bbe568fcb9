"""The data gate: bad site data gets one line naming the file, the column and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcare.errors import DataError, ExitCode
from fedcare.tasks import get_task
from fedcare.tasks.heart_disease import RAW_COLUMNS, read_raw

TASK = get_task("heart-disease")
GOOD = "63.0,1.0,1.0,145.0,233.0,1.0,2.0,150.0,0.0,2.3,3.0,0.0,6.0,0"
SICK = "67.0,1.0,4.0,160.0,286.0,0.0,2.0,108.0,1.0,1.5,2.0,3.0,3.0,2"
HEADER = ",".join(RAW_COLUMNS)
ROWS = [GOOD, SICK] * 6


def _write(tmp_path: Path, text: str | bytes, name: str = "site.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        TASK.load_site("site", path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert info.value.exit_code == ExitCode.DATA
    return message


def test_headerless_uci_and_named_columns_read_the_same(tmp_path: Path) -> None:
    uci = read_raw(_write(tmp_path, "\n".join(ROWS) + "\n", "a.data"))
    shuffled = list(reversed(RAW_COLUMNS))
    lines = [",".join([*shuffled, "smoker"])]
    for row in ROWS:
        values = dict(zip(RAW_COLUMNS, row.split(","), strict=True))
        lines.append(",".join([*(values[c] for c in shuffled), "1"]))
    named = read_raw(_write(tmp_path, "\n".join(lines) + "\n", "b.csv"))
    np.testing.assert_array_equal(uci, named)  # the extra 'smoker' column was never read


def test_parquet_is_read_through_the_same_schema(tmp_path: Path) -> None:
    columns = {c: [float(r.split(",")[i]) for r in ROWS] for i, c in enumerate(RAW_COLUMNS)}
    path = tmp_path / "site.parquet"
    pq.write_table(pa.table(columns), path)
    uci = read_raw(_write(tmp_path, "\n".join(ROWS) + "\n", "a.data"))
    np.testing.assert_array_equal(read_raw(path), uci)


def test_identifier_columns_are_all_named(tmp_path: Path) -> None:
    extra = ["mrn", "patient_name", "ssn", "date_of_birth", "email"]
    values = ["MR12345", "Jane Doe", "123-45-6789", "1961-04-02", "jane@example.org"]
    text = "\n".join([",".join([*extra, HEADER]), *(",".join([*values, r]) for r in ROWS)])
    message = _error(_write(tmp_path, text + "\n"))
    for column in extra:
        assert f"column '{column}' looks like" in message
    assert "5 problem(s)" in message


def test_renamed_identifiers_are_caught_by_their_values(tmp_path: Path) -> None:
    extra = ["contact", "ref", "born"]
    values = ["555-867-5309", "123-45-6789", "04/02/1961"]
    text = "\n".join([",".join([*extra, HEADER]), *(",".join([*values, r]) for r in ROWS)])
    message = _error(_write(tmp_path, text + "\n"))
    assert "'contact' looks like phone numbers (by its values)" in message
    assert "'ref' looks like social security numbers" in message
    assert "'born' looks like full dates" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file is empty"),
        ((HEADER + "\n").encode(), "no data rows (header only)"),
        ("\n".join(r.replace(",", ";") for r in ROWS).encode(), "looks ';'-separated"),
        (("\n".join([*ROWS, GOOD.replace("233.0", "high")]) + "\n").encode(),
         "column 'chol': 1 value(s) not a number, first 'high' at line 13"),
        (("\n".join([*ROWS, GOOD.replace("150.0", "inf")]) + "\n").encode(),
         "column 'thalach': 1 value(s) not finite"),
        (("\n".join([*ROWS, GOOD.replace("63.0", "430")]) + "\n").encode(),
         "column 'age': 1 value(s) outside 1..120"),
        (("\n".join([GOOD] * 12) + "\n").encode(),
         "every row is negative; training needs both classes"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (("\n".join([*ROWS, "1,2,3"]) + "\n").encode(),
         "line 13: expected 14 comma-separated columns, found 3"),
        (("\n".join([*ROWS, GOOD[:-1] + "?"]) + "\n").encode(), "column 'num': 1 missing value(s)"),
        (("\n".join(ROWS[:4]) + "\n").encode(), "only 4 row(s); a site needs at least 10"),
    ],
)  # fmt: skip
def test_malformed_files_give_one_clear_line(tmp_path: Path, content: bytes, expected: str) -> None:
    assert expected in _error(_write(tmp_path, content))


def test_missing_file(tmp_path: Path) -> None:
    assert "data file not found" in _error(tmp_path / "absent.csv")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    bad = [*ROWS, "1,2", GOOD.replace("145.0", "x"), GOOD.replace("1.0,1.0,145", "7.0,1.0,145")]
    message = _error(_write(tmp_path, "\n".join(bad) + "\n"))
    assert "3 problem(s)" in message
    assert "line 13" in message and "column 'trestbps'" in message and "column 'sex'" in message


def test_missing_declared_column_is_named(tmp_path: Path) -> None:
    header = HEADER.replace("chol,", "")
    rows = [",".join(v for i, v in enumerate(r.split(",")) if i != 4) for r in ROWS]
    assert "column(s) chol missing" in _error(_write(tmp_path, "\n".join([header, *rows]) + "\n"))
