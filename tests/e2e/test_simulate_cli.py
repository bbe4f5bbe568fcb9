"""End to end: ``fedcare simulate`` as a researcher runs it - a config file with overrides on
the command line, and bad input refused in one line with a non-zero exit and no results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedcare.config import StrategyName
from tests.run_summary import check_summary_schema

pytestmark = pytest.mark.slow
FEDCARE = [sys.executable, "-m", "fedcare"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run(
        [*FEDCARE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_runs_fedprox_with_config_file_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text('[run]\nrounds = 9\nstrategy = "fedavg"\n')
    overrides = ["--rounds", "2", "--strategy", str(StrategyName.FEDPROX)]
    result = _cli("simulate", "--config", "run.toml", *overrides, "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["strategy"], summary["rounds"]) == ("fedprox", 2)
    assert "round   2/2" in result.stdout and "cleveland" in result.stdout
    check_summary_schema(summary)


@pytest.mark.parametrize(
    ("args", "expected", "code"),
    [
        (["--strategy", "fedsgd"], "strategy: unknown value 'fedsgd'", 2),
        (["--config", "bad.toml"], "bad.toml: rounds: 0 must be an integer", 2),
        (["--scenario", "sites-missing-file"], "processed.va.data: data file not found", 3),
        (["--scenario", "sites-bad-columns"], "line 2: expected 14 comma-separated columns", 3),
        (
            ["--scenario", "sites-text-value"],
            "column 'age': 1 value(s) not a number, first 'sixty'",
            3,
        ),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(
    tmp_path: Path, site_paths: dict[str, Path], args: list[str], expected: str, code: int
) -> None:
    (tmp_path / "bad.toml").write_text("rounds = 0\n")
    good = site_paths["cleveland"].read_text()
    for name in ("sites-missing-file", "sites-bad-columns", "sites-text-value"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "processed.cleveland.data").write_text(good)
    (tmp_path / "sites-missing-file" / "processed.va.data").symlink_to(tmp_path / "nowhere")
    (tmp_path / "sites-bad-columns" / "processed.va.data").write_text(
        good.splitlines()[0] + "\n1,2\n"
    )
    (tmp_path / "sites-text-value" / "processed.va.data").write_text(
        "sixty" + good.splitlines()[0][4:] + "\n"
    )
    result = _cli("simulate", "--out", "out", *args, cwd=tmp_path)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert not (tmp_path / "out" / "summary.json").exists()
