"""`fedcare site check`: hospital IT runs the data gate before joining; exit code says it all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedcare", "site", "check", "--data", str(path), "--name", "va"],
        capture_output=True, text=True, timeout=120, env={"COLUMNS": "300", "PATH": ""},
    )  # fmt: skip


def test_real_site_file_passes(site_paths: dict[str, Path]) -> None:
    result = _check(site_paths["va"])
    assert result.returncode == 0, result.stderr
    assert "85 training and 45 test rows" in result.stdout


def test_identifier_file_is_refused_in_one_line(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    rows = site_paths["va"].read_text().splitlines()
    header = "ssn,age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal,num"
    path = tmp_path / "export.csv"
    path.write_text(
        "\n".join([header, *(f"123-45-67{i:02d},{r}" for i, r in enumerate(rows))]) + "\n"
    )
    result = _check(path)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "column 'ssn' looks like a national identifier" in lines[0]
    assert result.stdout == ""
