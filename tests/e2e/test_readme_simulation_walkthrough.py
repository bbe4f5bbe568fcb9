"""README "Simulating a federation", run as written in a fresh copy of the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.readme_walkthrough import ShellBlock, repository_copy, run_block, run_section

pytestmark = pytest.mark.slow
HEADING = "Simulating a federation"


def test_the_simulation_walkthrough_runs_as_written(tmp_path: Path) -> None:
    # Execute: every block, every command succeeds (run_section asserts it)
    repository, output = run_section(HEADING, tmp_path / "fedcare", timeout=900)
    # Assert: each run folder holds its result
    assert len(re.findall(r"Per-site test accuracy", output)) == 2, output[-2000:]
    for folder, strategy in {"first": "fedyogi", "prox": "fedprox"}.items():
        summary = json.loads((repository / "runs" / folder / "summary.json").read_text())
        assert summary["strategy"] == strategy and summary["rounds"] == 5, folder
        assert 0.5 < summary["mean_accuracy"] <= 1.0, folder
        assert sorted(summary["sites"]) == ["cleveland", "hungarian", "switzerland", "va"]
    assert json.loads((repository / "runs/prox/summary.json").read_text())["seed"] == 3


def test_a_broken_readme_command_stops_its_block_and_is_named(tmp_path: Path) -> None:
    # Prepare: a block whose second line is a command as a README typo would leave it
    typo = ".venv/bin/fedcare simulate --strategy fedavgg --out runs/x"
    block = ShellBlock(HEADING, line=40, text=f"echo before\n{typo}\necho after\n")
    repository = repository_copy(tmp_path / "fedcare")
    # Execute
    result = run_block(block, repository, timeout=120)
    # Assert: non-zero, the README line and the command named, nothing after it ran
    assert result.returncode != 0
    assert "README.md line 42: exit 2: .venv/bin/fedcare simulate --strategy fedavgg" in (
        result.stderr
    ), result.stderr
    assert "before" in result.stdout and "after" not in result.stdout
