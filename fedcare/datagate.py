"""The site's data gate: read a CSV or Parquet file through a task's schema, or refuse it.

Runs before anything trains. It checks column names, numbers, ranges, allowed levels, missing
values, the label, the row count and that both classes are present, and it runs the
de-identification guard; every problem is reported at once, in one line, each naming the file,
the column and what to do. Only the columns the schema declares are returned, so nothing else
in the file can reach a model.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcare.deidentify import find_identifiers
from fedcare.errors import DataError

MISSING_MARKS = frozenset({"?", "", "na", "nan", "null"})
MAX_PROBLEMS_SHOWN = 8


@dataclass(frozen=True)
class ColumnRule:
    """One declared column: a number within ``[minimum, maximum]``, optionally from ``levels``."""

    name: str
    minimum: float
    maximum: float
    levels: tuple[float, ...] | None = None
    missing_allowed: bool = True


@dataclass(frozen=True)
class TableSchema:
    """The columns a task reads, in order; the label is one of them and is never missing."""

    columns: tuple[ColumnRule, ...]
    label: str
    min_rows: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _fail(path: Path, problems: Sequence[str]) -> DataError:
    shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - MAX_PROBLEMS_SHOWN
    suffix = f"; and {more} more" if more > 0 else ""
    return DataError(f"{path}: {len(problems)} problem(s): {shown}{suffix}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_text_rows(
    path: Path,
) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (undecodable byte at offset {exc.start}); export the file "
            "as UTF-8 CSV"
        ) from None
    rows = [
        (number, fields)
        for number, fields in enumerate(csv.reader(text.splitlines()), start=1)
        if fields and any(f.strip() for f in fields)
    ]
    if not rows:
        raise DataError(f"{path}: the file is empty; export the site's records with a header row")
    first = rows[0][1]
    if len(first) == 1 and len(first[0]) > 0 and any(sep in first[0] for sep in ";\t|"):
        separator = next(sep for sep in ";\t|" if sep in first[0])
        raise DataError(
            f"{path}: line {rows[0][0]} has one column; the file looks {separator!r}-separated - "
            "export it comma-separated"
        )
    # A header is mostly names; a data row with a typo or two is still a data row.
    names = sum(1 for f in first if f.strip().lower() not in MISSING_MARKS and not _is_number(f))
    headerless = names < len(first) / 2
    if headerless:
        return None, rows
    return [f.strip() for f in first], rows[1:]


def _read_parquet_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    import pyarrow.parquet as pq  # only sites with Parquet files pay for the import

    try:
        table = pq.read_table(path).to_pydict()
    except Exception as exc:  # pyarrow raises many types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    names = list(table)
    count = len(table[names[0]]) if names else 0
    rows = [
        (i + 1, ["" if table[n][i] is None else str(table[n][i]) for n in names])
        for i in range(count)
    ]
    return names, rows


def read_site_table(path: Path, schema: TableSchema) -> np.ndarray:
    """The declared columns of ``path`` as floats (NaN = missing), or :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"{path}: data file not found; check the site's data path")
    header: list[str] | None
    if path.suffix.lower() == ".parquet":
        header, rows = _read_parquet_rows(path)
    else:
        header, rows = _read_text_rows(path)
    problems: list[str] = []
    if header is None:  # the UCI layout: no header, the schema's columns in order
        positions = {c.name: i for i, c in enumerate(schema.columns)}
        width = len(schema.columns)
        for number, fields in rows:
            if len(fields) != width:
                problems.append(
                    f"line {number}: expected {width} comma-separated columns, found {len(fields)}"
                )
        rows = [(n, f) for n, f in rows if len(f) == width]
    else:
        by_name = {name.lower(): i for i, name in enumerate(header)}
        values_by_column = {
            name: [f[i] if i < len(f) else "" for _, f in rows] for i, name in enumerate(header)
        }
        declared = {c.name for c in schema.columns}
        problems += find_identifiers(
            values_by_column, numeric_columns={k for k in values_by_column if k.lower() in declared}
        )
        missing = [c.name for c in schema.columns if c.name not in by_name]
        if missing:
            problems.append(
                f"column(s) {', '.join(missing)} missing; the task reads: {', '.join(schema.names)}"
            )
        positions = {c.name: by_name[c.name] for c in schema.columns if c.name in by_name}
    if not rows and not problems:
        problems.append("no data rows (header only); export the site's records")
    table = np.full((len(rows), len(schema.columns)), np.nan)
    for j, rule in enumerate(schema.columns):
        if rule.name not in positions:
            continue
        problems += _check_column(
            rule, rule.name == schema.label, positions[rule.name], rows, table[:, j]
        )
    if rows and len(rows) < schema.min_rows:
        problems.append(
            f"only {len(rows)} row(s); a site needs at least {schema.min_rows} to train"
        )
    if schema.label in positions and rows:
        labels = table[:, schema.names.index(schema.label)]
        classes = {bool(v > 0) for v in labels if not math.isnan(v)}
        if len(classes) == 1:
            only = "positive" if classes == {True} else "negative"
            problems.append(
                f"column '{schema.label}': every row is {only}; training needs both classes"
            )
    if problems:
        raise _fail(path, problems)
    return table


def _check_column(
    rule: ColumnRule,
    is_label: bool,
    position: int,
    rows: list[tuple[int, list[str]]],
    out: np.ndarray,
) -> list[str]:
    non_numeric: list[tuple[int, str]] = []
    non_finite: list[tuple[int, str]] = []
    out_of_range: list[tuple[int, str]] = []
    missing: list[int] = []
    for i, (number, fields) in enumerate(rows):
        raw = fields[position].strip() if position < len(fields) else ""
        if raw.lower() in MISSING_MARKS:
            missing.append(number)
            continue
        try:
            value = float(raw)
        except ValueError:
            non_numeric.append((number, raw))
            continue
        if not math.isfinite(value):
            non_finite.append((number, raw))
            continue
        if not rule.minimum <= value <= rule.maximum or (rule.levels and value not in rule.levels):
            out_of_range.append((number, raw))
            continue
        out[i] = value
    problems = []
    where = f"column '{rule.name}'"
    if non_numeric:
        n, raw = non_numeric[0]
        problems.append(
            f"{where}: {len(non_numeric)} value(s) not a number, first {raw!r} at line {n}; "
            "fix them or mark missing values '?'"
        )
    if non_finite:
        n, raw = non_finite[0]
        problems.append(
            f"{where}: {len(non_finite)} value(s) not finite, first {raw!r} at line {n}"
        )
    if out_of_range:
        n, raw = out_of_range[0]
        allowed = (
            f"one of {', '.join(f'{v:g}' for v in rule.levels)}"
            if rule.levels
            else f"{rule.minimum:g}..{rule.maximum:g}"
        )
        problems.append(
            f"{where}: {len(out_of_range)} value(s) outside {allowed}, first {raw!r} at line {n}"
        )
    if missing and (is_label or not rule.missing_allowed):
        problems.append(
            f"{where}: {len(missing)} missing value(s), first at line {missing[0]}; "
            "this column must be complete"
        )
    return problems
