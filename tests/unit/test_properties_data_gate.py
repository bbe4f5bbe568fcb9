"""Property of the data gate: any CSV file either loads or is refused in one line.

A hospital's export is whatever its system wrote. The gate (fedcare.datagate, through the
task's ``load_site``) must answer every byte string with either a site table or a
:class:`DataError` / :class:`ConfigError` whose message is one line; any other exception is a
traceback in a hospital's log and a bug. Random bytes rarely get past the header, so the files
are also valid site files with random edits: cells, the header, rows cut, bytes inserted.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from fedcare.errors import ConfigError, DataError
from fedcare.tasks import get_task
from fedcare.tasks.heart_disease import RAW_COLUMNS

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TASK = get_task("heart-disease")
DATA = Path(__file__).parents[2] / "fedcare" / "data" / "heart-disease"
VALID = (DATA / "processed.switzerland.data").read_bytes()  # 123 rows, both classes
VALID_ROWS = [line.split(",") for line in VALID.decode().splitlines()]
HEADER = ",".join(RAW_COLUMNS)

# A line longer than the csv module's field limit (131072 characters) once escaped the gate as
# _csv.Error with a traceback.
TOO_LONG_FIELD = VALID + b'"' + b"9" * 140_000 + b'"\n'


def _load_or_refuse(content: bytes) -> None:
    """Load ``content`` as a site file: a finite table, or a one-line refusal, nothing else."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "site.csv"
        path.write_bytes(content)
        try:
            data = TASK.load_site("site", path)
        except (DataError, ConfigError) as exc:
            message = str(exc)
            assert message and message == message.strip()
            assert len(message.splitlines()) == 1, f"refusal over several lines: {message!r}"
            event("refused", message.split(": ", 2)[-1][:40])
            return
    event("loaded")
    assert data.x_train.shape[1] == data.x_test.shape[1] == TASK.n_features
    for values in (data.x_train, data.x_test, data.y_train, data.y_test):
        assert np.isfinite(values).all()
    assert set(np.unique(np.concatenate([data.y_train, data.y_test]))) == {0.0, 1.0}


@PROPERTY
@given(content=st.binary(max_size=4096))
@example(content=TOO_LONG_FIELD).via("csv field limit: _csv.Error escaped the gate")
@example(content=b"\xff\xfe" + VALID).via("not UTF-8")
@example(content=b"").via("empty file")
@example(content=VALID.replace(b",", b";")).via("semicolon-separated")
def test_any_byte_string_loads_or_is_refused_in_one_line(content: bytes) -> None:
    _load_or_refuse(content)


TRICKY_CELLS = st.sampled_from(
    [
        "?", "", " ", "na", "NaN", "nan", "inf", "-inf", "Infinity", "1e400", "-1e400",
        "1e-400", "1_0", "0x10", "٣", "١٢٠", "+1", "-0", "1.", ".5", "91", "90", "89.9",
        "120.0001", "-10.5", "3.0", "4", "5", '"', '""', '"1,2"', '"1\n2"', "a,b", "\x00",
        "\r", "\x0b", "\x1c", "\u2028", "\u0085", "\ufeff1", "null", "NULL", "123-45-6789",
        "john@example.org", "555-123-4567", "12345", "1" * 200, "é", "\t1",
    ]
)  # fmt: skip
CELL = st.one_of(
    TRICKY_CELLS,
    st.text(max_size=6),
    st.integers(-(10**20), 10**20).map(str),
    st.floats().map(repr),
)
EDIT = st.tuples(st.integers(0, len(VALID_ROWS) - 1), st.integers(0, 15), CELL)


@st.composite
def near_valid_files(draw: st.DrawFn) -> bytes:
    """A real site file with a header or not, a few cells and rows changed, text inserted."""
    rows = [list(row) for row in VALID_ROWS]
    for row, column, text in draw(st.lists(EDIT, max_size=4), label="cells"):
        cells = rows[row]
        if column < len(cells):
            cells[column] = text
        else:
            cells.append(text)
    keep = draw(st.integers(0, len(rows)), label="rows kept")
    rows = rows[:keep] if draw(st.booleans(), label="cut rows") else rows
    header: list[str] = []
    if draw(st.booleans(), label="with header"):
        header = list(RAW_COLUMNS)
        # Named columns may come in any order: the header and every row move together.
        order = draw(st.permutations(range(len(header))), label="column order")
        header = [header[i] for i in order]
        rows = [[cells[i] for i in order] + cells[len(order) :] for cells in rows]
        if draw(st.booleans(), label="edit header"):
            position = draw(st.integers(0, len(header)), label="header position")
            name = draw(st.one_of(st.sampled_from(["mrn", "ssn", "name", "Age", "num", ""]), CELL))
            header[position : position + 1] = [name]
    text = "\n".join(",".join(cells) for cells in ([header] if header else []) + rows) + "\n"
    content = text.encode()
    for _ in range(draw(st.one_of(st.just(0), st.integers(0, 2)), label="insertions")):
        at = draw(st.integers(0, len(content)), label="at")
        inserted = draw(st.text(min_size=1, max_size=4), label="text")  # bytes: the other test
        content = content[:at] + inserted.encode() + content[at:]
    return content


@PROPERTY
@given(content=near_valid_files())
@example(content=VALID).via("the site file itself loads")
@example(content=(HEADER + "\n").encode() + VALID).via("with a header")
@example(content=VALID.replace(b"\n", b"\r\n", 3)).via("mixed line ends")
def test_any_edit_of_a_valid_site_file_loads_or_is_refused_in_one_line(content: bytes) -> None:
    _load_or_refuse(content)


def test_a_field_over_the_csv_limit_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(TOO_LONG_FIELD)

    with pytest.raises(DataError) as refused:
        TASK.load_site("site", path)

    assert len(str(refused.value).splitlines()) == 1
    assert csv.field_size_limit() == 131072  # the gate does not raise it for the whole process
