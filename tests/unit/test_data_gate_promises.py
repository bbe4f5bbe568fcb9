"""The data gate's promises, one by one, through a small schema of its own.

Only declared, well-formed columns reach training; every other file is refused in one line that
names the file, the line, the column and the fix. The messages are what a site's data manager
reads, so the tests assert them exactly; the boundaries (the range ends, the top code, the
minimum row count, the header guess) are tested on both sides.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcare.datagate import ColumnRule, TableSchema, read_site_table
from fedcare.errors import DataError

SCHEMA = TableSchema(
    columns=(
        ColumnRule("age", 0, 120, top_code=90),
        ColumnRule("sex", 0, 1, levels=(0.0, 1.0)),
        ColumnRule("chol", 100, 600, missing_allowed=False),
        ColumnRule("bp", 50, 250),
        ColumnRule("target", 0, 2, levels=(0.0, 1.0, 2.0)),
    ),
    label="target",
    min_rows=4,
)
HEADER = "age,sex,chol,bp,target"
ROWS = ["63,1,233,145,0", "67,1,286,160,1", "41,0,204,130,0", "56,0,236,120,2"]
EXPECTED = np.array(
    [[63, 1, 233, 145, 0], [67, 1, 286, 160, 1], [41, 0, 204, 130, 0], [56, 0, 236, 120, 2]],
    dtype=float,
)
UNDECLARED_FIX = (
    "not declared by the task (it reads age, sex, chol, bp, target): remove them from the "
    "export, or list each harmless one with --ignore-column NAME"
)


def _csv(tmp_path: Path, lines: list[str], name: str = "site.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _refusal(path: Path, ignore: tuple[str, ...] = (), schema: TableSchema = SCHEMA) -> str:
    with pytest.raises(DataError) as refused:
        read_site_table(path, schema, ignore)
    return str(refused.value)


def _with(row: int, column: str, value: str) -> list[str]:
    """ROWS with one field replaced (row counts from 0, the first data row)."""
    rows = [r.split(",") for r in ROWS]
    rows[row][SCHEMA.names.index(column)] = value
    return [",".join(r) for r in rows]


# --- what loads -------------------------------------------------------------------------------


def test_a_well_formed_file_loads_its_declared_columns_as_floats_in_schema_order(
    tmp_path: Path,
) -> None:
    shuffled = ["target", "bp", "chol", "sex", "age"]
    lines = [",".join(shuffled)]
    for row in ROWS:
        values = dict(zip(SCHEMA.names, row.split(","), strict=True))
        lines.append(",".join(values[c] for c in shuffled))

    table = read_site_table(_csv(tmp_path, lines), SCHEMA)

    assert table.dtype == np.float64
    np.testing.assert_array_equal(table, EXPECTED)


def test_a_headerless_file_is_read_in_the_schemas_column_order(tmp_path: Path) -> None:
    table = read_site_table(_csv(tmp_path, ROWS, "site.data"), SCHEMA)

    np.testing.assert_array_equal(table, EXPECTED)


def test_values_on_the_range_ends_and_at_the_top_code_itself_load(tmp_path: Path) -> None:
    rows = ["0,0,100,50,0", "90,1,600,250,1", "89,0,300,100,0", "45,1,350,120,2"]

    table = read_site_table(_csv(tmp_path, [HEADER, *rows]), SCHEMA)

    assert table[:, 0].tolist() == [0, 90, 89, 45]
    assert table[:, 2].tolist() == [100, 600, 300, 350]
    assert table[:, 3].tolist() == [50, 250, 100, 120]


def test_each_missing_mark_in_any_case_loads_as_nan_and_the_rest_of_the_column_still_loads(
    tmp_path: Path,
) -> None:
    marks = ["?", "", "NA", "null", "NaN", "NULL"]
    rows = [f"{40 + i},1,200,{mark},{i % 2}" for i, mark in enumerate(marks)] + ["70,0,210,140,0"]

    table = read_site_table(_csv(tmp_path, [HEADER, *rows]), SCHEMA)

    assert table.dtype == np.float64
    assert np.isnan(table[:6, 3]).all()
    assert table[6].tolist() == [70, 0, 210, 140, 0]


def test_a_headerless_first_row_of_missing_marks_is_data_not_a_header(tmp_path: Path) -> None:
    rows = ["NA,NA,233,null,0", *ROWS[1:]]

    table = read_site_table(_csv(tmp_path, rows, "site.data"), SCHEMA)

    assert np.isnan(table[0, [0, 1, 3]]).all()
    np.testing.assert_array_equal(table[1:], EXPECTED[1:])


def test_a_header_of_which_half_the_names_are_numbers_still_names_the_columns(
    tmp_path: Path,
) -> None:
    extra = ["5", "6", "7", "8", "9"]
    lines = [",".join([*SCHEMA.names, *extra]), *(r + ",1,1,1,1,1" for r in ROWS)]

    table = read_site_table(_csv(tmp_path, lines), SCHEMA, tuple(extra))

    np.testing.assert_array_equal(table, EXPECTED)


def test_rows_of_bare_commas_are_skipped_like_blank_lines(tmp_path: Path) -> None:
    lines = [HEADER, ROWS[0], ",,,,", "", ROWS[1], ROWS[2], " , ,", ROWS[3]]

    table = read_site_table(_csv(tmp_path, lines), SCHEMA)

    np.testing.assert_array_equal(table, EXPECTED)


def test_a_row_shorter_than_the_header_reads_its_absent_fields_as_missing(tmp_path: Path) -> None:
    lines = [
        "target,age,sex,chol,bp",
        "0,63,1,233,145",
        "1,67,1,286",
        "0,41,0,204,130",
        "2,5,0,236",
    ]

    table = read_site_table(_csv(tmp_path, lines), SCHEMA)

    assert np.isnan(table[[1, 3], 3]).all()
    assert table[1, :3].tolist() == [67, 1, 286]


def test_a_trailing_comma_on_the_header_alone_is_no_column(tmp_path: Path) -> None:
    lines = [HEADER + ",", *ROWS]

    table = read_site_table(_csv(tmp_path, lines), SCHEMA)

    np.testing.assert_array_equal(table, EXPECTED)


def test_a_first_column_named_with_a_semicolon_is_not_taken_for_a_separator(
    tmp_path: Path,
) -> None:
    lines = ["ward;bed," + HEADER, *("3," + r for r in ROWS)]

    table = read_site_table(_csv(tmp_path, lines), SCHEMA, ("ward;bed",))

    np.testing.assert_array_equal(table, EXPECTED)


def test_a_parquet_file_is_found_by_its_suffix_in_any_case_and_nulls_load_as_nan(
    tmp_path: Path,
) -> None:
    columns = {n: [float(r.split(",")[i]) for r in ROWS] for i, n in enumerate(SCHEMA.names)}
    columns["bp"][1] = None  # type: ignore[call-overload]
    path = tmp_path / "site.PARQUET"
    pq.write_table(pa.table(columns), path)

    table = read_site_table(path, SCHEMA)

    expected = EXPECTED.copy()
    expected[1, 3] = np.nan
    np.testing.assert_array_equal(table, expected)


def test_exactly_the_minimum_number_of_rows_is_enough(tmp_path: Path) -> None:
    assert read_site_table(_csv(tmp_path, [HEADER, *ROWS]), SCHEMA).shape == (4, 5)


# --- what is refused, in one line -------------------------------------------------------------


def test_a_missing_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"

    assert _refusal(path) == f"{path}: data file not found; check the site's data path"


def test_a_file_that_is_not_utf8_is_refused_with_the_offset_of_the_bad_byte(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(b"age\xff,sex\n")

    assert _refusal(path) == (
        f"{path}: not UTF-8 text (undecodable byte at offset 3); export the file as UTF-8 CSV"
    )


def test_a_file_of_blank_lines_and_bare_commas_is_refused_as_empty(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["", ",,,", "  "])

    assert _refusal(path) == (
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
    path = _csv(tmp_path, lines)

    assert _refusal(path) == (
        f"{path}: line 2 has one column; the file looks {shown}-separated - "
        "export it comma-separated"
    )


def test_a_first_line_of_a_lone_semicolon_is_a_semicolon_separated_file(tmp_path: Path) -> None:
    path = _csv(tmp_path, [";", "1;2"])

    assert _refusal(path) == (
        f"{path}: line 1 has one column; the file looks ';'-separated - export it comma-separated"
    )


def test_a_single_column_file_is_refused_for_its_missing_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["XRAY", "1", "2"])

    assert _refusal(path) == (
        f"{path}: 3 problem(s): column(s) 'XRAY' {UNDECLARED_FIX}; column(s) age, sex, chol, bp, "
        "target missing; the task reads: age, sex, chol, bp, target; only 2 row(s); a site needs "
        "at least 4 to train"
    )


def test_a_field_over_the_csv_size_limit_is_refused_as_unreadable(tmp_path: Path) -> None:
    limit = csv.field_size_limit()
    path = _csv(tmp_path, [HEADER, "1" * (limit + 1) + ",1,200,120,0"])

    assert _refusal(path) == (
        f"{path}: not a readable CSV file (field larger than field limit ({limit})); "
        "export it as plain CSV"
    )


def test_a_damaged_parquet_file_is_refused_naming_the_reader_error(tmp_path: Path) -> None:
    path = tmp_path / "site.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")

    assert _refusal(path) == f"{path}: not a readable Parquet file (ArrowInvalid)"


def test_a_parquet_file_without_columns_is_refused_for_its_missing_columns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.parquet"
    pq.write_table(pa.table({}), path)

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column(s) age, sex, chol, bp, target missing; "
        "the task reads: age, sex, chol, bp, target"
    )


def test_a_bad_parquet_value_is_located_by_its_row_number(tmp_path: Path) -> None:
    columns = {n: [int(r.split(",")[i]) for r in ROWS] for i, n in enumerate(SCHEMA.names)}
    columns["bp"][2] = 20
    path = tmp_path / "site.parquet"
    pq.write_table(pa.table(columns), path)

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column 'bp': 1 value(s) outside 50..250, first '20' at line 3"
    )


def test_headerless_rows_of_the_wrong_width_are_named_and_the_others_still_checked(
    tmp_path: Path,
) -> None:
    rows = [ROWS[0], "67,1,286,160", *_with(2, "bp", "300")[2:], ROWS[1]]
    path = _csv(tmp_path, rows, "site.data")

    assert _refusal(path) == (
        f"{path}: 2 problem(s): line 2: expected 5 comma-separated columns, found 4; "
        "column 'bp': 1 value(s) outside 50..250, first '300' at line 3"
    )


def test_a_first_row_with_two_typos_in_five_fields_is_still_data(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["6x,1,2y3,145,0", *ROWS[1:]], "site.data")

    assert _refusal(path) == (
        f"{path}: 2 problem(s): column 'age': 1 value(s) not a number, first '6x' at line 1; "
        "fix them or mark missing values '?'; column 'chol': 1 value(s) not a number, first "
        "'2y3' at line 1; fix them or mark missing values '?'"
    )


def test_non_numbers_are_counted_and_the_first_located_after_a_missing_value(
    tmp_path: Path,
) -> None:
    rows = _with(0, "bp", "?")
    rows[1] = _with(1, "bp", "abc")[1]
    rows[3] = _with(3, "bp", "x")[3]
    path = _csv(tmp_path, [HEADER, *rows])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column 'bp': 2 value(s) not a number, first 'abc' at line 3; "
        "fix them or mark missing values '?'"
    )


def test_non_finite_values_are_counted_and_the_first_located(tmp_path: Path) -> None:
    rows = _with(1, "bp", "inf")
    rows[2] = _with(2, "bp", "-inf")[2]
    path = _csv(tmp_path, [HEADER, *rows])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column 'bp': 2 value(s) not finite, first 'inf' at line 3"
    )


def test_values_outside_a_range_are_refused_naming_the_range(tmp_path: Path) -> None:
    rows = _with(1, "bp", "49")
    rows[2] = _with(2, "bp", "251")[2]
    path = _csv(tmp_path, [HEADER, *rows])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column 'bp': 2 value(s) outside 50..250, first '49' at line 3"
    )


def test_values_outside_the_levels_are_refused_naming_the_levels(tmp_path: Path) -> None:
    rows = _with(0, "sex", "0.5")
    rows[3] = _with(3, "sex", "2")[3]
    path = _csv(tmp_path, [HEADER, *rows])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column 'sex': 2 value(s) outside one of 0, 1, first '0.5' at line 2"
    )


def test_values_above_the_top_code_are_refused_with_the_top_coding_fix(tmp_path: Path) -> None:
    rows = _with(1, "age", "91")
    rows[2] = _with(2, "age", "95")[2]
    path = _csv(tmp_path, [HEADER, *rows])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column 'age': 2 value(s) above 90, first at line 3 (HIPAA Safe "
        "Harbor identifiers); top-code every value above 89 to 90 in the export, the category "
        "'90 or above'"
    )


def test_missing_values_in_a_column_that_must_be_complete_are_counted_and_located(
    tmp_path: Path,
) -> None:
    rows = _with(1, "chol", "?")
    rows[3] = _with(3, "chol", "")[3]
    path = _csv(tmp_path, [HEADER, *rows])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column 'chol': 2 missing value(s), first at line 3; "
        "this column must be complete"
    )


def test_a_missing_label_is_refused_although_its_rule_allows_missing_values(
    tmp_path: Path,
) -> None:
    path = _csv(tmp_path, [HEADER, *_with(2, "target", "na"), "50,1,250,130,1"])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column 'target': 1 missing value(s), first at line 4; "
        "this column must be complete"
    )


@pytest.mark.parametrize(("labels", "only"), [("0000", "negative"), ("1221", "positive")])
def test_a_label_of_one_class_only_is_refused_naming_the_class(
    tmp_path: Path, labels: str, only: str
) -> None:
    rows = [r[:-1] + label for r, label in zip(ROWS, labels, strict=True)]
    path = _csv(tmp_path, [HEADER, *rows])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column 'target': every row is {only}; training needs both classes"
    )


def test_fewer_rows_than_the_minimum_are_refused_naming_both_counts(tmp_path: Path) -> None:
    path = _csv(tmp_path, [HEADER, *ROWS[1:]])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): only 3 row(s); a site needs at least 4 to train"
    )


def test_a_header_without_rows_is_refused_as_header_only(tmp_path: Path) -> None:
    path = _csv(tmp_path, [HEADER])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): no data rows (header only); export the site's records"
    )


def test_a_header_only_file_missing_a_column_is_refused_for_that_column_alone(
    tmp_path: Path,
) -> None:
    path = _csv(tmp_path, ["age,sex,chol,target"])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column(s) bp missing; the task reads: age, sex, chol, bp, target"
    )


def test_a_missing_column_does_not_stop_the_checks_of_the_columns_after_it(
    tmp_path: Path,
) -> None:
    rows = [r.split(",") for r in _with(1, "bp", "abc")]
    lines = ["age,chol,bp,target", *(",".join([r[0], r[2], r[3], r[4]]) for r in rows)]
    path = _csv(tmp_path, lines)

    assert _refusal(path) == (
        f"{path}: 2 problem(s): column(s) sex missing; the task reads: age, sex, chol, bp, "
        "target; column 'bp': 1 value(s) not a number, first 'abc' at line 3; fix them or mark "
        "missing values '?'"
    )


def test_an_undeclared_column_and_a_bad_value_are_reported_together(tmp_path: Path) -> None:
    lines = [HEADER + ",smoker", *(r + ",1" for r in _with(0, "chol", "99"))]
    path = _csv(tmp_path, lines)

    assert _refusal(path) == (
        f"{path}: 2 problem(s): column(s) 'smoker' {UNDECLARED_FIX}; "
        "column 'chol': 1 value(s) outside 100..600, first '99' at line 2"
    )


def test_a_column_with_values_but_no_name_is_refused_as_undeclared(tmp_path: Path) -> None:
    path = _csv(tmp_path, [HEADER + ",", *(r + ",7" for r in ROWS)])

    assert _refusal(path) == f"{path}: 1 problem(s): column(s) '' {UNDECLARED_FIX}"


def test_a_repeated_column_is_refused_naming_it(tmp_path: Path) -> None:
    path = _csv(tmp_path, [HEADER + ",age", *(r + ",63" for r in ROWS)])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column(s) 'age' appear more than once; export each column once"
    )


@pytest.mark.parametrize(
    ("ignore", "note"),
    [((), ""), (("ssn",), " (listed to ignore, but an identifier cannot be ignored)")],
)
def test_an_identifier_column_is_refused_with_the_de_identification_fix(
    tmp_path: Path, ignore: tuple[str, ...], note: str
) -> None:
    path = _csv(tmp_path, [HEADER + ",ssn", *(r + ",1" for r in ROWS)])

    assert _refusal(path, ignore) == (
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
    path = _csv(tmp_path, [HEADER, *rows])

    assert _refusal(path) == (
        f"{path}: 1 problem(s): column 'chol': 4 value(s) outside 100..600, first '12345' at line 2"
    )


# --- how many problems one line shows ---------------------------------------------------------

WIDE = TableSchema(
    columns=(*(ColumnRule(f"f{i}", 0, 1) for i in range(9)), ColumnRule("y", 0, 1, levels=(0, 1))),
    label="y",
    min_rows=2,
)


def _wide_file(tmp_path: Path, bad: int) -> Path:
    header = ",".join(WIDE.names)
    first = ",".join(["x"] * bad + ["0"] * (9 - bad) + ["0"])
    return _csv(tmp_path, [header, first, ",".join(["1"] * 10)])


def _not_a_number(i: int) -> str:
    return (
        f"column 'f{i}': 1 value(s) not a number, first 'x' at line 2; "
        "fix them or mark missing values '?'"
    )


def test_eight_problems_are_all_shown(tmp_path: Path) -> None:
    path = _wide_file(tmp_path, 8)

    shown = "; ".join(_not_a_number(i) for i in range(8))
    assert _refusal(path, schema=WIDE) == f"{path}: 8 problem(s): {shown}"


def test_a_ninth_problem_is_counted_not_shown(tmp_path: Path) -> None:
    path = _wide_file(tmp_path, 9)

    shown = "; ".join(_not_a_number(i) for i in range(8))
    assert _refusal(path, schema=WIDE) == f"{path}: 9 problem(s): {shown}; and 1 more"


def test_an_address_broken_by_a_bare_carriage_return_inside_quotes_is_still_caught(
    tmp_path: Path,
) -> None:
    streets = ["12 Oak\rStreet", "7 Elm\rRoad", "3 Ash\rLane", "40 Bay\rDrive"]
    path = tmp_path / "site.csv"
    lines = [HEADER + ",home", *(f'{r},"{s}"' for r, s in zip(ROWS, streets, strict=True))]
    path.write_bytes(("\n".join(lines) + "\n").encode())

    assert _refusal(path, ("home",)) == (
        f"{path}: 1 problem(s): column 'home' (listed to ignore, but an identifier cannot be "
        "ignored) looks like street addresses (by its values: 4 of 4): remove it from the export; "
        "fedcare only takes de-identified data"
    )


def test_a_file_with_old_mac_line_ends_loads_like_any_other(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(("\r".join([HEADER, *ROWS]) + "\r").encode())

    table = read_site_table(path, SCHEMA)

    np.testing.assert_array_equal(table, EXPECTED)
