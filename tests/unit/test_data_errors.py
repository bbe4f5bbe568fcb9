"""Bad site data gets one clear line naming the file and the field, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.errors import DataError, ExitCode
from fedcare.tasks import get_task

TASK = get_task("heart-disease")
GOOD = "63.0,1.0,1.0,145.0,233.0,1.0,2.0,150.0,0.0,2.3,3.0,0.0,6.0,0"


def _write(tmp_path: Path, text: str | bytes, name: str = "site.data") -> Path:
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
    assert str(path) in message
    assert info.value.exit_code == ExitCode.DATA
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in _error(tmp_path / "absent.data")


def test_wrong_column_count_names_line(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, f"{GOOD}\n1,2,3\n"))
    assert "line 2" in message and "expected 14" in message and "found 3" in message


def test_non_numeric_value_names_column(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, f"{GOOD}\n{GOOD.replace('233.0', 'high')}\n"))
    assert "line 2 column 'chol'" in message and "'high'" in message


def test_infinite_value_is_refused(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, GOOD.replace("150.0", "inf") + "\n"))
    assert "column 'thalach'" in message and "not finite" in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    bad = "\n".join([GOOD, "1,2", GOOD.replace("145.0", "x"), "3,4"]) + "\n"
    message = _error(_write(tmp_path, bad))
    assert message.count("line ") == 3 and "3 problem(s)" in message


def test_empty_file(tmp_path: Path) -> None:
    assert "no data rows" in _error(_write(tmp_path, ""))


def test_undecodable_bytes(tmp_path: Path) -> None:
    assert "UTF-8" in _error(_write(tmp_path, b"\xff\xfe\x00garbage"))


def test_single_class_site_cannot_train(tmp_path: Path) -> None:
    assert "both classes" in _error(_write(tmp_path, "\n".join([GOOD] * 10) + "\n"))
