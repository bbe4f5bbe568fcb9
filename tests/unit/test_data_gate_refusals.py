"""The data gate's refusals, one by one, through the small schema of ``tests/data_gate_schema.py``.

Every file the gate will not load is refused in one line that names the file, the line, the
column and the fix; the messages are what a site's data manager reads, so the tests assert them
exactly (what loads, and how many problems one line shows: ``test_data_gate_promises.py``).
"""

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data_gate_schema import (
    HEADER,
    ROWS,
    SCHEMA,
    UNDECLARED_FIX,
    refusal_of,
    rows_with,
    site_csv,
)

# --- what is refused, in one line -------------------------------------------------------------


def test_a_missing_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"

    assert refusal_of(path) == f"{path}: data file not found; check the site's data path"


def test_a_file_that_is_not_utf8_is_refused_with_the_offset_of_the_bad_byte(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(b"age\xff,sex\n")

    assert refusal_of(path) == (
        f"{path}: not UTF-8 text (undecodable byte at offset 3); export the file as UTF-8 CSV"
    )


def test_a_file_of_blank_lines_and_bare_commas_is_refused_as_empty(tmp_path: Path) -> None:
    path = site_csv(tmp_path, ["", ",,,", "  "])

    assert refusal_of(path) == (
        f"{path}: the file is empty; export the site's records with a header row"
    )


@pytest.mark.parametrize(("separator", "shown"), [(";", "';'"), ("\t", "'\\t'"), ("|", "'|'")])
def test_a_file_with_another_separator_is_refused_naming_it_and_its_first_line(
    tmp_path: Path, separator: str, shown: str
) -> None:
    lines = [
        "",
        separator.join(HEADER.upper().split(",")),
        *(r.replace(",", separator) for r in ROWS),
    ]
    path = site_csv(tmp_path, lines)

    assert refusal_of(path) == (
        f"{path}: line 2 has one column; the file looks {shown}-separated - "
        "export it comma-separated"
    )


def test_a_first_line_of_a_lone_semicolon_is_a_semicolon_separated_file(tmp_path: Path) -> None:
    path = site_csv(tmp_path, [";", "1;2"])

    assert refusal_of(path) == (
        f"{path}: line 1 has one column; the file looks ';'-separated - export it comma-separated"
    )


def test_a_single_column_file_is_refused_for_its_missing_columns(tmp_path: Path) -> None:
    path = site_csv(tmp_path, ["XRAY", "1", "2"])

    assert refusal_of(path) == (
        f"{path}: 3 problem(s): column(s) 'XRAY' {UNDECLARED_FIX}; column(s) age, sex, chol, bp, "
        "target missing; the task reads: age, sex, chol, bp, target; only 2 row(s); a site needs "
        "at least 4 to train"
    )


def test_a_field_over_the_csv_size_limit_is_refused_as_unreadable(tmp_path: Path) -> None:
    limit = csv.field_size_limit()
    path = site_csv(tmp_path, [HEADER, "1" * (limit + 1) + ",1,200,120,0"])

    assert refusal_of(path) == (
        f"{path}: not a readable CSV file (field larger than field limit ({limit})); "
        "export it as plain CSV"
    )


def test_a_damaged_parquet_file_is_refused_naming_the_reader_error(tmp_path: Path) -> None:
    path = tmp_path / "site.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")

    assert refusal_of(path) == f"{path}: not a readable Parquet file (ArrowInvalid)"


def test_a_parquet_file_without_columns_is_refused_for_its_missing_columns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.parquet"
    pq.write_table(pa.table({}), path)

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column(s) age, sex, chol, bp, target missing; "
        "the task reads: age, sex, chol, bp, target"
    )


def test_a_bad_parquet_value_is_located_by_its_row_number(tmp_path: Path) -> None:
    columns = {n: [int(r.split(",")[i]) for r in ROWS] for i, n in enumerate(SCHEMA.names)}
    columns["bp"][2] = 20
    path = tmp_path / "site.parquet"
    pq.write_table(pa.table(columns), path)

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column 'bp': 1 value(s) outside 50..250, first '20' at line 3"
    )


def test_headerless_rows_of_the_wrong_width_are_named_and_the_others_still_checked(
    tmp_path: Path,
) -> None:
    rows = [ROWS[0], "67,1,286,160", *rows_with(2, "bp", "300")[2:], ROWS[1]]
    path = site_csv(tmp_path, rows, "site.data")

    assert refusal_of(path) == (
        f"{path}: 2 problem(s): line 2: expected 5 comma-separated columns, found 4; "
        "column 'bp': 1 value(s) outside 50..250, first '300' at line 3"
    )


def test_a_first_row_with_two_typos_in_five_fields_is_still_data(tmp_path: Path) -> None:
    path = site_csv(tmp_path, ["6x,1,2y3,145,0", *ROWS[1:]], "site.data")

    assert refusal_of(path) == (
        f"{path}: 2 problem(s): column 'age': 1 value(s) not a number, first '6x' at line 1; "
        "fix them or mark missing values '?'; column 'chol': 1 value(s) not a number, first "
        "'2y3' at line 1; fix them or mark missing values '?'"
    )


def test_non_numbers_are_counted_and_the_first_located_after_a_missing_value(
    tmp_path: Path,
) -> None:
    rows = rows_with(0, "bp", "?")
    rows[1] = rows_with(1, "bp", "abc")[1]
    rows[3] = rows_with(3, "bp", "x")[3]
    path = site_csv(tmp_path, [HEADER, *rows])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column 'bp': 2 value(s) not a number, first 'abc' at line 3; "
        "fix them or mark missing values '?'"
    )


def test_non_finite_values_are_counted_and_the_first_located(tmp_path: Path) -> None:
    rows = rows_with(1, "bp", "inf")
    rows[2] = rows_with(2, "bp", "-inf")[2]
    path = site_csv(tmp_path, [HEADER, *rows])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column 'bp': 2 value(s) not finite, first 'inf' at line 3"
    )


def test_values_outside_a_range_are_refused_naming_the_range(tmp_path: Path) -> None:
    rows = rows_with(1, "bp", "49")
    rows[2] = rows_with(2, "bp", "251")[2]
    path = site_csv(tmp_path, [HEADER, *rows])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column 'bp': 2 value(s) outside 50..250, first '49' at line 3"
    )


def test_values_outside_the_levels_are_refused_naming_the_levels(tmp_path: Path) -> None:
    rows = rows_with(0, "sex", "0.5")
    rows[3] = rows_with(3, "sex", "2")[3]
    path = site_csv(tmp_path, [HEADER, *rows])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column 'sex': 2 value(s) outside one of 0, 1, first '0.5' at line 2"
    )


def test_values_above_the_top_code_are_refused_with_the_top_coding_fix(tmp_path: Path) -> None:
    rows = rows_with(1, "age", "91")
    rows[2] = rows_with(2, "age", "95")[2]
    path = site_csv(tmp_path, [HEADER, *rows])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column 'age': 2 value(s) above 90, first at line 3 (HIPAA Safe "
        "Harbor identifiers); top-code every value above 89 to 90 in the export, the category "
        "'90 or above'"
    )


def test_missing_values_in_a_column_that_must_be_complete_are_counted_and_located(
    tmp_path: Path,
) -> None:
    rows = rows_with(1, "chol", "?")
    rows[3] = rows_with(3, "chol", "")[3]
    path = site_csv(tmp_path, [HEADER, *rows])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column 'chol': 2 missing value(s), first at line 3; "
        "this column must be complete"
    )


def test_a_missing_label_is_refused_although_its_rule_allows_missing_values(
    tmp_path: Path,
) -> None:
    path = site_csv(tmp_path, [HEADER, *rows_with(2, "target", "na"), "50,1,250,130,1"])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column 'target': 1 missing value(s), first at line 4; "
        "this column must be complete"
    )


@pytest.mark.parametrize(("labels", "only"), [("0000", "negative"), ("1221", "positive")])
def test_a_label_of_one_class_only_is_refused_naming_the_class(
    tmp_path: Path, labels: str, only: str
) -> None:
    rows = [r[:-1] + label for r, label in zip(ROWS, labels, strict=True)]
    path = site_csv(tmp_path, [HEADER, *rows])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column 'target': every row is {only}; training needs both classes"
    )


def test_fewer_rows_than_the_minimum_are_refused_naming_both_counts(tmp_path: Path) -> None:
    path = site_csv(tmp_path, [HEADER, *ROWS[1:]])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): only 3 row(s); a site needs at least 4 to train"
    )


def test_a_header_without_rows_is_refused_as_header_only(tmp_path: Path) -> None:
    path = site_csv(tmp_path, [HEADER])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): no data rows (header only); export the site's records"
    )


def test_a_header_only_file_missing_a_column_is_refused_for_that_column_alone(
    tmp_path: Path,
) -> None:
    path = site_csv(tmp_path, ["age,sex,chol,target"])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column(s) bp missing; the task reads: age, sex, chol, bp, target"
    )


def test_a_missing_column_does_not_stop_the_checks_of_the_columns_after_it(
    tmp_path: Path,
) -> None:
    rows = [r.split(",") for r in rows_with(1, "bp", "abc")]
    lines = ["age,chol,bp,target", *(",".join([r[0], r[2], r[3], r[4]]) for r in rows)]
    path = site_csv(tmp_path, lines)

    assert refusal_of(path) == (
        f"{path}: 2 problem(s): column(s) sex missing; the task reads: age, sex, chol, bp, "
        "target; column 'bp': 1 value(s) not a number, first 'abc' at line 3; fix them or mark "
        "missing values '?'"
    )


def test_an_undeclared_column_and_a_bad_value_are_reported_together(tmp_path: Path) -> None:
    lines = [HEADER + ",smoker", *(r + ",1" for r in rows_with(0, "chol", "99"))]
    path = site_csv(tmp_path, lines)

    assert refusal_of(path) == (
        f"{path}: 2 problem(s): column(s) 'smoker' {UNDECLARED_FIX}; "
        "column 'chol': 1 value(s) outside 100..600, first '99' at line 2"
    )


def test_a_column_with_values_but_no_name_is_refused_as_undeclared(tmp_path: Path) -> None:
    path = site_csv(tmp_path, [HEADER + ",", *(r + ",7" for r in ROWS)])

    assert refusal_of(path) == f"{path}: 1 problem(s): column(s) '' {UNDECLARED_FIX}"


def test_a_repeated_column_is_refused_naming_it(tmp_path: Path) -> None:
    path = site_csv(tmp_path, [HEADER + ",age", *(r + ",63" for r in ROWS)])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column(s) 'age' appear more than once; export each column once"
    )


@pytest.mark.parametrize(
    ("ignore", "note"),
    [((), ""), (("ssn",), " (listed to ignore, but an identifier cannot be ignored)")],
)
def test_an_identifier_column_is_refused_with_the_de_identification_fix(
    tmp_path: Path, ignore: tuple[str, ...], note: str
) -> None:
    path = site_csv(tmp_path, [HEADER + ",ssn", *(r + ",1" for r in ROWS)])

    assert refusal_of(path, ignore) == (
        f"{path}: 1 problem(s): column 'ssn'{note} looks like a national identifier (by its "
        "name): remove it from the export; fedcare only takes de-identified data"
    )


def test_a_declared_columns_numbers_are_range_checked_not_taken_for_zip_codes(
    tmp_path: Path,
) -> None:
    rows = [
        ",".join([*r.split(",")[:2], zip5, *r.split(",")[3:]])
        for r, zip5 in zip(ROWS, ["12345", "23456", "34567", "45678"], strict=True)
    ]
    path = site_csv(tmp_path, [HEADER, *rows])

    assert refusal_of(path) == (
        f"{path}: 1 problem(s): column 'chol': 4 value(s) outside 100..600, first '12345' at line 2"
    )
