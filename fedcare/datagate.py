"""The site's data gate: read a CSV or Parquet file through a task's schema, or refuse it.

Runs before anything trains. It checks column names, numbers, ranges, allowed levels, missing
values, the label, the row count and that both classes are present; every problem is reported
at once, in one line, each naming the file, the column and what to do.

De-identification is an allow-list: a file with named columns may hold only the columns the
schema declares, plus those the site lists to ignore (``SitePolicy.ignore_columns``); any other
column refuses the file, named in the message. Ignored columns are never read into a model, but
they still pass the identifier guard (:mod:`fedcare.deidentify`, by name and by value): the
export itself must not carry identifiers, so an SSN column cannot be ignored into a federation.
A declared column with a Safe Harbor ceiling (``ColumnRule.top_code``: ages over 89) refuses
values above it rather than silently top-coding them: the export is the site's to fix (the guard
does the same for any other column named as an age). A spreadsheet's "CSV UTF-8" export loads
as the plain file: its byte-order mark is dropped and CRLF line ends are line ends.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcare.deidentify import find_identifiers, strong_identifier
from fedcare.errors import ConfigError, DataError

MISSING_MARKS = frozenset({"?", "", "na", "nan", "null"})
MAX_PROBLEMS_SHOWN = 8
QUOTABLE = re.compile(r"^[\w.+-]{1,10}$")  # a short token like 'high' may be quoted; text never


@dataclass(frozen=True)
class ColumnRule:
    """One declared column: a number within ``[minimum, maximum]``, optionally from ``levels``.

    ``top_code``: values above it identify a person (HIPAA Safe Harbor: ages over 89) and refuse
    the file; the value itself is the category "this or above" (90 = "90 or older").
    """

    name: str
    minimum: float
    maximum: float
    levels: tuple[float, ...] | None = None
    missing_allowed: bool = True
    top_code: float | None = None


@dataclass(frozen=True)
class TableSchema:
    """The columns a task reads, in order; the label is one of them and is never missing."""

    columns: tuple[ColumnRule, ...]
    label: str
    min_rows: int

    def __post_init__(self) -> None:
        # A task (and soon a task plugin) declares its schema in code: a label that is not one
        # of the columns would let a file with no label pass the gate, so it is refused here.
        if self.label not in self.names:
            raise ConfigError(
                f"task schema: label {self.label!r} is not one of its columns "
                f"({', '.join(self.names)}); add it to the columns"
            )

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
    # A spreadsheet's "CSV UTF-8" starts with a byte-order mark; it is no part of the first name.
    text = text.removeprefix("\ufeff")
    # The csv module reads the text itself (newline=""), so a quoted field spanning a line break
    # stays one value (refused as a number) instead of being glued into another value.
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                rows.append((reader.line_num, fields))
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise DataError(
            f"{path}: not a readable CSV file ({exc}); export it as plain CSV"
        ) from None
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


def read_site_table(
    path: Path, schema: TableSchema, ignore_columns: tuple[str, ...] = ()
) -> np.ndarray:
    """The declared columns of ``path`` as floats (NaN = missing), or :class:`DataError`.

    ``ignore_columns``: undeclared columns the site allows in its export (never read; still
    checked by the identifier guard). Any other undeclared column refuses the file.
    """
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
        problems += _allow_list_problems(header, values_by_column, schema, ignore_columns)
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


def _allow_list_problems(
    header: list[str],
    values_by_column: dict[str, list[str]],
    schema: TableSchema,
    ignore_columns: tuple[str, ...],
) -> list[str]:
    """Identifier-like columns (each with the rule that hit), then every other undeclared one."""
    declared = {name.lower() for name in schema.names}
    ignored = {name.strip().lower() for name in ignore_columns}
    problems = [
        f"--ignore-column {name}: the task reads this column, it cannot be ignored"
        for name in ignore_columns
        if name.strip().lower() in declared
    ]
    seen = [c.lower() for c in header]
    repeated = sorted({c for c in header if c and seen.count(c.lower()) > 1})
    if repeated:  # a second column of the same name would hide the first from every check
        problems.append(
            f"column(s) {', '.join(repr(c) for c in repeated)} appear more than once; "
            "export each column once"
        )
    findings = find_identifiers(
        values_by_column, numeric_columns={c for c in header if c.lower() in declared}
    )
    for finding in findings:
        note = " (listed to ignore, but an identifier cannot be ignored)"
        problems.append(
            f"column '{finding.column}'{note if finding.column.lower() in ignored else ''} "
            f"looks like {finding.why}: {finding.fix}; fedcare only takes de-identified data"
        )
    flagged = {f.column for f in findings}
    undeclared = [
        c
        for c in header
        if c.lower() not in declared | ignored
        and c not in flagged
        and (c or any(v.strip() for v in values_by_column[c]))  # a trailing comma is no column
    ]
    if undeclared:
        problems.append(
            f"column(s) {', '.join(repr(c) for c in undeclared)} not declared by the task (it "
            f"reads {', '.join(schema.names)}): remove them from the export, or list each "
            "harmless one with --ignore-column NAME"
        )
    return problems


def _shown(raw: str) -> str:
    """A bad value as the message may show it: short tokens only, never text or an identifier."""
    if QUOTABLE.match(raw) and strong_identifier(raw) is None:
        return f"{raw!r} "
    return "(not shown) "


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
    above_top_code: list[int] = []
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
        if rule.top_code is not None and value > rule.top_code:
            above_top_code.append(number)
            continue
        out[i] = value
    problems = []
    where = f"column '{rule.name}'"
    if non_numeric:
        n, raw = non_numeric[0]
        problems.append(
            f"{where}: {len(non_numeric)} value(s) not a number, first {_shown(raw)}at line {n}; "
            "fix them or mark missing values '?'"
        )
    if non_finite:
        n, raw = non_finite[0]
        problems.append(
            f"{where}: {len(non_finite)} value(s) not finite, first {raw!r} at line {n}"
        )
    if above_top_code and (top := rule.top_code) is not None:
        problems.append(
            f"{where}: {len(above_top_code)} value(s) above {top:g}, first at line "
            f"{above_top_code[0]} (HIPAA Safe Harbor identifiers); top-code every value above "
            f"{top - 1:g} to {top:g} in the export, the category '{top:g} or above'"
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
