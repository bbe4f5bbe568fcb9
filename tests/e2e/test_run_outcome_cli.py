"""End to end: ``fedcare simulate`` of a federation in which every site refuses every round (each
site's own privacy budget is far below what one round spends) learns nothing, and says so: a
non-zero exit (5) and one line per site with its reason and what to do. The same rule
(:mod:`fedcare.run_outcome`) ends ``fedcare coordinator run``; its deployed case is in
``test_deployment.py`` (a DP run after the plain run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedcare.errors import ExitCode

pytestmark = pytest.mark.slow


def two_exhausted_sites(tmp_path: Path, site_paths: dict[str, Path]) -> list[str]:
    """Cleveland and VA as the scenario ``two``; the options giving each a budget of ε 0.01."""
    (tmp_path / "two").mkdir()
    for site in ("cleveland", "va"):
        (tmp_path / "two" / site_paths[site].name).write_text(site_paths[site].read_text())
    return ["--site-budget", "cleveland=0.01", "--site-budget", "va=0.01"]


def test_a_simulation_in_which_no_site_trained_exits_non_zero_with_a_line_per_site(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: a two-hospital federation; each site's budget (ε 0.01) is below one DP round's;
    # each site's own statistics, so the rounds are asked (the statistics release: below)
    budgets = two_exhausted_sites(tmp_path, site_paths)
    # Execute
    result = subprocess.run(
        [sys.executable, "-m", "fedcare", "simulate", "--scenario", "two", "--rounds", "1",
         "--dp", "--target-epsilon", "1", "--preprocessing", "site", *budgets, "--out", "out"],
        cwd=tmp_path, env=os.environ | {"COLUMNS": "200"}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    # Assert
    assert result.returncode == ExitCode.NO_TRAINING == 5, result.stderr[-2000:]
    assert (
        "error: no site trained in any of the 1 round(s); the model is still the initial one"
        in (result.stderr)
    )
    for site in ("cleveland", "va"):
        state = tmp_path / "out" / "sites" / site
        line = (
            f"  {site}: every round refused: privacy-budget-exhausted — its privacy budget is "
            "spent (an earlier non-private run makes ε infinite); see 'fedcare privacy report "
            f"--state {state}'"
        )
        assert line in result.stderr.splitlines(), result.stderr[-2000:]
    rounds = json.loads((tmp_path / "out" / "rounds.json").read_text())  # the results are kept
    assert [r["round"] for r in rounds] == [0, 1]
    assert "run folder:" in result.stdout


def test_a_simulation_whose_sites_cannot_release_statistics_exits_5_in_one_line(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    """The default run releases the federation's statistics before round 1; when the sites'
    budgets refuse that release, nothing trains: exit 5 and one line saying why and what to do
    (not a traceback)."""
    budgets = two_exhausted_sites(tmp_path, site_paths)
    result = subprocess.run(
        [sys.executable, "-m", "fedcare", "simulate", "--scenario", "two", "--rounds", "1",
         "--dp", "--target-epsilon", "1", *budgets, "--out", "out"],
        cwd=tmp_path, env=os.environ | {"COLUMNS": "400"}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == ExitCode.NO_TRAINING, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "0 of 2 sites released usable feature statistics" in errors[0]
    assert errors[0].count("privacy-budget-exhausted") == 2
    assert errors[0].endswith("or train with each site's own statistics (--preprocessing site)")
