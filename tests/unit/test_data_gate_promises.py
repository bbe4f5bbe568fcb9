"""The data gate's promises about what loads and how much one refusal shows, through the small
schema of ``tests/data_gate_schema.py`` (each refusal's exact line: ``test_data_gate_refusals.py``).

Only declared, well-formed columns reach training. The boundaries (the range ends, the top code,
the minimum row count, the header guess) are tested on both sides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcare.datagate import ColumnRule, TableSchema, read_site_table
from fedcare.errors import ConfigError
from tests.data_gate_schema import (
    EXPECTED,
    HEADER,
    ROWS,
    SCHEMA,
    refusal_of,
    site_csv,
)

# --- what loads -------------------------------------------------------------------------------


def test_a_well_formed_file_loads_its_declared_columns_as_floats_in_schema_order(
    tmp_path: Path,
) -> None:
    shuffled = ["target", "bp", "chol", "sex", "age"]
    lines = [",".join(shuffled)]
    for row in ROWS:
        values = dict(zip(SCHEMA.names, row.split(","), strict=True))
        lines.append(",".join(values[c] for c in shuffled))

    table = read_site_table(site_csv(tmp_path, lines), SCHEMA)

    assert table.dtype == np.float64
    np.testing.assert_array_equal(table, EXPECTED)


def test_a_headerless_file_is_read_in_the_schemas_column_order(tmp_path: Path) -> None:
    table = read_site_table(site_csv(tmp_path, ROWS, "site.data"), SCHEMA)

    np.testing.assert_array_equal(table, EXPECTED)


def test_values_on_the_range_ends_and_at_the_top_code_itself_load(tmp_path: Path) -> None:
    rows = ["0,0,100,50,0", "90,1,600,250,1", "89,0,300,100,0", "45,1,350,120,2"]

    table = read_site_table(site_csv(tmp_path, [HEADER, *rows]), SCHEMA)

    assert table[:, 0].tolist() == [0, 90, 89, 45]
    assert table[:, 2].tolist() == [100, 600, 300, 350]
    assert table[:, 3].tolist() == [50, 250, 100, 120]


def test_each_missing_mark_in_any_case_loads_as_nan_and_the_rest_of_the_column_still_loads(
    tmp_path: Path,
) -> None:
    marks = ["?", "", "NA", "null", "NaN", "NULL"]
    rows = [f"{40 + i},1,200,{mark},{i % 2}" for i, mark in enumerate(marks)] + ["70,0,210,140,0"]

    table = read_site_table(site_csv(tmp_path, [HEADER, *rows]), SCHEMA)

    assert table.dtype == np.float64
    assert np.isnan(table[:6, 3]).all()
    assert table[6].tolist() == [70, 0, 210, 140, 0]


def test_a_headerless_first_row_of_missing_marks_is_data_not_a_header(tmp_path: Path) -> None:
    rows = ["NA,NA,233,null,0", *ROWS[1:]]

    table = read_site_table(site_csv(tmp_path, rows, "site.data"), SCHEMA)

    assert np.isnan(table[0, [0, 1, 3]]).all()
    np.testing.assert_array_equal(table[1:], EXPECTED[1:])


def test_a_header_of_which_half_the_names_are_numbers_still_names_the_columns(
    tmp_path: Path,
) -> None:
    extra = ["5", "6", "7", "8", "9"]
    lines = [",".join([*SCHEMA.names, *extra]), *(r + ",1,1,1,1,1" for r in ROWS)]

    table = read_site_table(site_csv(tmp_path, lines), SCHEMA, tuple(extra))

    np.testing.assert_array_equal(table, EXPECTED)


def test_rows_of_bare_commas_are_skipped_like_blank_lines(tmp_path: Path) -> None:
    lines = [HEADER, ROWS[0], ",,,,", "", ROWS[1], ROWS[2], " , ,", ROWS[3]]

    table = read_site_table(site_csv(tmp_path, lines), SCHEMA)

    np.testing.assert_array_equal(table, EXPECTED)


def test_a_row_shorter_than_the_header_reads_its_absent_fields_as_missing(tmp_path: Path) -> None:
    lines = [
        "target,age,sex,chol,bp",
        "0,63,1,233,145",
        "1,67,1,286",
        "0,41,0,204,130",
        "2,5,0,236",
    ]

    table = read_site_table(site_csv(tmp_path, lines), SCHEMA)

    assert np.isnan(table[[1, 3], 3]).all()
    assert table[1, :3].tolist() == [67, 1, 286]


def test_a_trailing_comma_on_the_header_alone_is_no_column(tmp_path: Path) -> None:
    lines = [HEADER + ",", *ROWS]

    table = read_site_table(site_csv(tmp_path, lines), SCHEMA)

    np.testing.assert_array_equal(table, EXPECTED)


def test_a_first_column_named_with_a_semicolon_is_not_taken_for_a_separator(
    tmp_path: Path,
) -> None:
    lines = ["ward;bed," + HEADER, *("3," + r for r in ROWS)]

    table = read_site_table(site_csv(tmp_path, lines), SCHEMA, ("ward;bed",))

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
    assert read_site_table(site_csv(tmp_path, [HEADER, *ROWS]), SCHEMA).shape == (4, 5)


# --- how many problems one line shows ---------------------------------------------------------

WIDE = TableSchema(
    columns=(*(ColumnRule(f"f{i}", 0, 1) for i in range(9)), ColumnRule("y", 0, 1, levels=(0, 1))),
    label="y",
    min_rows=2,
)


def _wide_file(tmp_path: Path, bad: int) -> Path:
    header = ",".join(WIDE.names)
    first = ",".join(["x"] * bad + ["0"] * (9 - bad) + ["0"])
    return site_csv(tmp_path, [header, first, ",".join(["1"] * 10)])


def _not_a_number(i: int) -> str:
    return (
        f"column 'f{i}': 1 value(s) not a number, first 'x' at line 2; "
        "fix them or mark missing values '?'"
    )


def test_eight_problems_are_all_shown(tmp_path: Path) -> None:
    path = _wide_file(tmp_path, 8)

    shown = "; ".join(_not_a_number(i) for i in range(8))
    assert refusal_of(path, schema=WIDE) == f"{path}: 8 problem(s): {shown}"


def test_a_ninth_problem_is_counted_not_shown(tmp_path: Path) -> None:
    path = _wide_file(tmp_path, 9)

    shown = "; ".join(_not_a_number(i) for i in range(8))
    assert refusal_of(path, schema=WIDE) == f"{path}: 9 problem(s): {shown}; and 1 more"


def test_an_address_broken_by_a_bare_carriage_return_inside_quotes_is_still_caught(
    tmp_path: Path,
) -> None:
    streets = ["12 Oak\rStreet", "7 Elm\rRoad", "3 Ash\rLane", "40 Bay\rDrive"]
    path = tmp_path / "site.csv"
    lines = [HEADER + ",home", *(f'{r},"{s}"' for r, s in zip(ROWS, streets, strict=True))]
    path.write_bytes(("\n".join(lines) + "\n").encode())

    assert refusal_of(path, ("home",)) == (
        f"{path}: 1 problem(s): column 'home' (listed to ignore, but an identifier cannot be "
        "ignored) looks like street addresses (by its values: 4 of 4): remove it from the export; "
        "fedcare only takes de-identified data"
    )


def test_a_file_with_old_mac_line_ends_loads_like_any_other(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(("\r".join([HEADER, *ROWS]) + "\r").encode())

    table = read_site_table(path, SCHEMA)

    np.testing.assert_array_equal(table, EXPECTED)


def test_a_schema_whose_label_is_not_one_of_its_columns_is_refused() -> None:
    # Prepare: a task schema that forgot to declare its label as a column
    columns = (ColumnRule("age", 0, 120), ColumnRule("num", 0, 4))
    # Execute / Assert: refused where it is declared, naming the label and the columns
    refusal = r"label 'outcome' is not one of its columns \(age, num\)"
    with pytest.raises(ConfigError, match=refusal):
        TableSchema(columns=columns, label="outcome", min_rows=1)
    assert TableSchema(columns=columns, label="num", min_rows=1).label == "num"
