"""The data gate: bad site data gets one line naming the file, the column and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcare.client.policy import SitePolicy
from fedcare.deidentify import identifier_by_name, identifier_by_values
from fedcare.errors import ConfigError, DataError, ExitCode
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
    named = read_raw(_write(tmp_path, "\n".join(lines) + "\n", "b.csv"), ("smoker",))
    np.testing.assert_array_equal(uci, named)  # the ignored 'smoker' column was never read


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
    extra = ["contact", "ref", "seen"]
    values = ["555-867-5309", "123-45-6789", "04/02/1961"]
    text = "\n".join([",".join([*extra, HEADER]), *(",".join([*values, r]) for r in ROWS)])
    message = _error(_write(tmp_path, text + "\n"))
    assert "'contact' looks like phone numbers (by its values: 12 of 12" in message
    assert "'ref' looks like social security numbers" in message
    assert "'seen' looks like full dates" in message


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


@pytest.mark.parametrize(
    ("values", "what"),
    [
        (["John Smith", "Smith, John", "Mary-Jane O'Neil", "SMITH, JOHN"], "person names"),
        (["MRN0012345"], "record-number-like codes"),
        (["00123456"], "record-number-like codes"),
        (["5558675309"], "phone numbers"),
        (["15558675309"], "phone numbers"),
        (["3 March 1961"], "full dates"),
        (["March 3, 1961"], "full dates"),
        (["03-Mar-1961"], "full dates"),
        (["19610303"], "full dates"),
        (["called back on 555-867-5309 about results"], "phone numbers"),
        (["", "x", "y", "123-45-6789"], "social security numbers"),
        (["Patient seen today, reports chest pain after exercise"], "free-text notes"),
    ],
)
def test_value_patterns_name_the_identifier(values: list[str], what: str) -> None:
    found = identifier_by_values(values)
    assert found is not None and found.startswith(what)


@pytest.mark.parametrize(
    "values",
    [
        ["0", "1", "1", "0"],
        ["23.5", "31.2", "0.000123", "-0.00001234", "1e-05", "3.14159265"],
        ["Typical Angina"] * 10 + ["Non Anginal"] * 5,  # a categorical level repeats; a name not
        ["250000", "310000", "180000"],  # platelets per microlitre
        ["1961", "1975"],  # a year alone is not a Safe Harbor identifier
    ],
)
def test_harmless_values_are_not_called_identifiers(values: list[str]) -> None:
    assert identifier_by_values(values) is None


@pytest.mark.parametrize(
    ("column", "what"),
    [("identifier", "a record number or identifier"), ("Birthday", "a date"),
     ("zip3", "a ZIP code"), ("PatientName", "a person's name"), ("DateOfBirth", "a date"),
     ("notes", "free text")],
)  # fmt: skip
def test_identifier_column_names(column: str, what: str) -> None:
    assert identifier_by_name(column) == what
    assert all(identifier_by_name(c) is None for c in RAW_COLUMNS)


def test_a_declared_column_cannot_be_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")
    with pytest.raises(DataError, match="--ignore-column age: the task reads this column"):
        TASK.load_site("site", path, ignore_columns=("age",))


def test_an_identifier_in_a_declared_column_is_not_quoted(tmp_path: Path) -> None:
    rows = [*ROWS, GOOD.replace("233.0", "123-45-6789"), GOOD.replace("150.0", "John Smith")]
    message = _error(_write(tmp_path, "\n".join(rows) + "\n"))
    assert "column 'chol': 1 value(s) not a number, first (not shown) at line 13" in message
    assert "column 'thalach': 1 value(s) not a number, first (not shown) at line 14" in message
    assert "6789" not in message and "Smith" not in message


def test_a_repeated_column_name_is_refused(tmp_path: Path) -> None:
    header = ",".join([*RAW_COLUMNS, "extra", "Extra"])
    rows = [f"{r},123-45-6789,0" for r in ROWS]  # the first 'extra' must not hide behind the second
    message = _error(_write(tmp_path, "\n".join([header, *rows]) + "\n"))
    assert "column(s) 'Extra', 'extra' appear more than once" in message


def test_the_ignore_list_round_trips_through_node_config() -> None:
    policy = SitePolicy(ignore_columns=("smoker", "bmi"))
    assert policy.to_mapping()["ignore-columns"] == "smoker,bmi"
    assert SitePolicy.from_mapping(policy.to_mapping()) == policy
    assert "ignore-columns" not in SitePolicy().to_mapping()  # node config has no empty strings
    for bad in ("a,b", "a b", 'a"', "a=b", ""):
        with pytest.raises(ConfigError, match="ignore column"):
            SitePolicy(ignore_columns=(bad,))


def test_a_quoted_value_spanning_a_line_break_is_refused_not_glued(tmp_path: Path) -> None:
    """``"6\\n3"`` is one malformed age, never the age 63."""
    broken = '"6\n3"' + GOOD[GOOD.index(",") :]
    path = _write(tmp_path, "\n".join([broken, *ROWS]) + "\n")

    message = _error(path)

    assert "age" in message
