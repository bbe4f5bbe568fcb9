"""A site's patients as the CSV file a hospital would hold, and back through the data gate.

One row per patient, the columns ``SITE_COLUMNS`` with a header, an empty cell for a missing
value. Reading goes through fedcare's data gate (:func:`fedcare.datagate.read_site_table`)
with the task's schema, so a site file is checked exactly as a hospital's own export would
be: declared columns only, ranges, complete outcome columns, identifiers refused.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from fedcare.atomic import write_bytes_atomic
from fedcare.datagate import read_site_table
from fedcare.tasks.ncctg_lung.data import SurvivalRows, site_rows
from fedcare.tasks.ncctg_lung.schema import SCHEMA, SITE_COLUMNS


def _cell(value: float) -> str:
    """The shortest text that reads back as the same float ('' for missing, '60' for 60.0)."""
    if np.isnan(value):
        return ""
    return str(np.format_float_positional(value, trim="-"))


def write_site_file(rows: SurvivalRows, path: Path) -> Path:
    """Write ``rows`` to ``path`` as CSV (atomically: a reader never sees half a file)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SITE_COLUMNS)
    writer.writerows([_cell(v) for v in row] for row in rows.to_table())
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))
    return path


def read_site_file(path: Path, ignore_columns: tuple[str, ...] = ()) -> SurvivalRows:
    """A site file's patients, through the data gate (:class:`~fedcare.errors.DataError`
    lists every problem at once). ``ignore_columns``: harmless extra columns the site allows."""
    return SurvivalRows.from_table(read_site_table(path, SCHEMA, ignore_columns))


def write_site_files(directory: Path) -> dict[str, Path]:
    """Every site's file, ``<site>.csv`` in ``directory``: the embedded federation on disk."""
    return {
        site: write_site_file(rows, directory / f"{site}.csv") for site, rows in site_rows().items()
    }
