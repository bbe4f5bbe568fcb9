"""README "Differential privacy", run as written in a fresh copy of the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.readme_walkthrough import run_section

pytestmark = pytest.mark.slow
HEADING = "Differential privacy"
TARGET_EPSILON = 1.0  # the block's --target-epsilon


def test_the_privacy_walkthrough_runs_as_written_and_keeps_its_epsilon(tmp_path: Path) -> None:
    # Execute: every block succeeds (run_section asserts it)
    repository, output = run_section(HEADING, tmp_path / "fedcare", timeout=900)
    # Assert: the privacy report shows VA's ε from its ledger, within the target
    reported = re.search(r"cumulative ε = ([0-9.]+) at δ", output)
    assert reported, output[-2000:]
    summary = json.loads((repository / "runs/dp/summary.json").read_text())
    va = summary["privacy"]["sites"]["va"]
    assert 0 < float(reported.group(1)) <= TARGET_EPSILON
    assert float(reported.group(1)) == pytest.approx(va["epsilon"], abs=1e-4)
    assert va["rounds_trained"] == 5
