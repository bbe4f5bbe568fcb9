"""Issue #12 item 5: the data gate tried as a new user would, with files a spreadsheet writes.

A "CSV UTF-8" export (byte-order mark, CRLF line ends) loads as the plain file does; a header
that repeats a column is refused; an age over 89 that is not top-coded is refused wherever it
sits in the export (a declared column through its top code, any other column named as an age
through the identifier guard). Each refusal is one line naming the file, the column and the fix,
and ``fedcare site check`` exits non-zero with that line.
"""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.datagate import read_site_table
from fedcare.errors import ExitCode
from fedcare.tasks.heart_disease import RAW_COLUMNS, read_raw
from tests.data_gate_schema import EXPECTED, HEADER, ROWS, SCHEMA, refusal_of

BOM = b"\xef\xbb\xbf"
AGE_FIX = (
    "top-code every value above 89 to 90 in the export, the category '90 or above'; "
    "fedcare only takes de-identified data"
)


def _write(path: Path, lines: list[str], bom: bool = True, crlf: bool = True) -> Path:
    text = ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")
    path.write_bytes((BOM if bom else b"") + text.encode("utf-8"))
    return path


def _va_export(site_paths: dict[str, Path], path: Path, extra: str, value: str) -> Path:
    """The VA hospital's records as a spreadsheet export with one ``extra`` column."""
    rows = [line for line in site_paths["va"].read_text().splitlines() if line]
    lines = [",".join((*RAW_COLUMNS, extra)), *(f"{row},{value}" for row in rows)]
    return _write(path, lines)


# --- a byte-order mark and CRLF line ends ---------------------------------------------------


@pytest.mark.parametrize(("bom", "crlf"), [(True, True), (True, False)])
def test_a_spreadsheet_csv_utf8_export_loads_as_the_plain_file(
    tmp_path: Path, bom: bool, crlf: bool
) -> None:
    # Prepare
    plain = _write(tmp_path / "plain.csv", [HEADER, *ROWS], bom=False, crlf=False)
    exported = _write(tmp_path / "exported.csv", [HEADER, *ROWS], bom=bom, crlf=crlf)
    # Execute
    table = read_site_table(exported, SCHEMA)
    # Assert
    np.testing.assert_array_equal(table, EXPECTED)
    np.testing.assert_array_equal(table, read_site_table(plain, SCHEMA))


def test_a_headerless_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    # Prepare: the UCI layout; the mark would otherwise glue itself to the first age
    path = _write(tmp_path / "site.data", ROWS)
    # Execute
    table = read_site_table(path, SCHEMA)
    # Assert
    np.testing.assert_array_equal(table, EXPECTED)


def test_an_undecodable_byte_after_a_byte_order_mark_is_located_from_the_files_start(
    tmp_path: Path,
) -> None:
    # Prepare
    path = tmp_path / "site.csv"
    path.write_bytes(BOM + b"age\xff,sex\r\n")
    # Execute
    message = refusal_of(path)
    # Assert: offset 6 is where the byte is in the file (3 would be after the mark)
    assert message == (
        f"{path}: not UTF-8 text (undecodable byte at offset 6); export the file as UTF-8 CSV"
    )


# --- a header that repeats a column ---------------------------------------------------------


@pytest.mark.parametrize(
    ("repeated", "named"), [("age", "'age'"), ("Age", "'Age', 'age'"), (" age", "'age'")]
)
def test_a_repeated_column_in_a_spreadsheet_export_is_refused_not_overwritten(
    tmp_path: Path, repeated: str, named: str
) -> None:
    # Prepare: the later column would replace the earlier one's ages
    lines = [f"{HEADER},{repeated}", *(f"{row},30" for row in ROWS)]
    path = _write(tmp_path / "site.csv", lines)
    # Execute
    message = refusal_of(path)
    # Assert
    assert message == (
        f"{path}: 1 problem(s): column(s) {named} appear more than once; export each column once"
    )


# --- ages over 89 -----------------------------------------------------------------------------


def test_a_declared_age_over_89_is_refused_with_the_top_coding_fix(tmp_path: Path) -> None:
    # Prepare
    path = _write(tmp_path / "site.csv", [HEADER, "93,1,233,145,0", *ROWS[1:]])
    # Execute
    message = refusal_of(path)
    # Assert
    assert message == (
        f"{path}: 1 problem(s): column 'age': 1 value(s) above 90, first at line 2 (HIPAA Safe "
        "Harbor identifiers); top-code every value above 89 to 90 in the export, the category "
        "'90 or above'"
    )


@pytest.mark.parametrize("column", ["age_at_visit", "AgeYears", "Ages", "age2"])
def test_an_ignored_age_column_with_an_age_over_89_is_refused_by_the_guard(
    tmp_path: Path, column: str
) -> None:
    # Prepare: one value above the top code, among top-coded, empty and unreadable ones
    ages = [" 90.5", "90", "", "n/a"]
    lines = [f"{HEADER},{column}", *(f"{row},{age}" for row, age in zip(ROWS, ages, strict=True))]
    path = _write(tmp_path / "site.csv", lines)
    # Execute
    message = refusal_of(path, ignore=(column,))
    # Assert
    assert message == (
        f"{path}: 1 problem(s): column '{column}' (listed to ignore, but an identifier cannot "
        "be ignored) looks like ages over 89 (by its values: 1 of 3 above 90; HIPAA Safe Harbor "
        f"identifiers): {AGE_FIX}"
    )


def test_an_undeclared_age_column_is_refused_as_ages_over_89_not_only_as_undeclared(
    tmp_path: Path,
) -> None:
    # Prepare: an age column at or under the top code is only undeclared
    lines = [f"{HEADER},age_now,age_then", *(f"{row},88,95" for row in ROWS)]
    path = _write(tmp_path / "site.csv", lines)
    # Execute
    message = refusal_of(path)
    # Assert
    assert message == (
        f"{path}: 2 problem(s): column 'age_then' looks like ages over 89 (by its values: 4 of 4 "
        f"above 90; HIPAA Safe Harbor identifiers): {AGE_FIX}; column(s) 'age_now' not declared "
        "by the task (it reads age, sex, chol, bp, target): remove them from the export, or "
        "list each harmless one with --ignore-column NAME"
    )


@pytest.mark.parametrize(
    ("column", "value"),
    [("age_years", "90"), ("age_band", "90+"), ("stage", "95"), ("dosage", "120")],
)
def test_top_coded_ages_and_columns_that_are_no_age_pass_the_guard(
    tmp_path: Path, column: str, value: str
) -> None:
    # Prepare
    lines = [f"{HEADER},{column}", *(f"{row},{value}" for row in ROWS)]
    path = _write(tmp_path / "site.csv", lines)
    # Execute
    table = read_site_table(path, SCHEMA, (column,))
    # Assert
    np.testing.assert_array_equal(table, EXPECTED)


def test_the_embedded_hospitals_hold_no_age_over_89(site_paths: dict[str, Path]) -> None:
    # Prepare
    age = RAW_COLUMNS.index("age")
    # Execute
    ages = [read_raw(path)[:, age] for path in site_paths.values()]
    # Assert
    assert max(float(np.nanmax(a)) for a in ages) <= 89


# --- fedcare site check -----------------------------------------------------------------------


def test_site_check_loads_a_spreadsheet_export_and_refuses_an_old_age_in_one_line(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare
    passing = _va_export(site_paths, tmp_path / "passing.csv", "age_years", "90")
    refused = _va_export(site_paths, tmp_path / "refused.csv", "age_years", "91")
    check = ["site", "check", "--name", "va", "--ignore-column", "age_years", "--data"]
    # Execute
    loaded = CliRunner().invoke(app, [*check, str(passing)])
    refusal = CliRunner().invoke(app, [*check, str(refused)])
    # Assert
    assert loaded.exit_code == 0, loaded.output
    assert "passes the heart-disease data gate; 85 training and 45 test rows" in loaded.stdout
    assert refusal.exit_code == ExitCode.DATA
    assert refusal.stdout == ""
    lines = refusal.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {refused}: 1 problem(s): column 'age_years' ")
    assert lines[0].endswith(f"looks like ages over 89 (by its values: 200 of 200 above 90; "
                             f"HIPAA Safe Harbor identifiers): {AGE_FIX}")  # fmt: skip
