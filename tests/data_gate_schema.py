"""A small schema of its own for the data gate's promise tests, and helpers to write a site's
file and read the gate's one-line refusal (``tests/unit/test_data_gate_*.py``)."""

from pathlib import Path

import numpy as np
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


def site_csv(tmp_path: Path, lines: list[str], name: str = "site.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def refusal_of(path: Path, ignore: tuple[str, ...] = (), schema: TableSchema = SCHEMA) -> str:
    with pytest.raises(DataError) as refused:
        read_site_table(path, schema, ignore)
    return str(refused.value)


def rows_with(row: int, column: str, value: str) -> list[str]:
    """ROWS with one field replaced (row counts from 0, the first data row)."""
    rows = [r.split(",") for r in ROWS]
    rows[row][SCHEMA.names.index(column)] = value
    return [",".join(r) for r in rows]
