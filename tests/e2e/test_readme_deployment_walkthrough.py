"""README "Run a real federation on one machine", run as written in a fresh copy of the
repository: relative paths, port 9092, three site daemons, a DP run, the site's audit log and
privacy report, and both stops."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.readme_walkthrough import run_section

pytestmark = pytest.mark.slow
HEADING = "Run a real federation on one machine"
TARGET_EPSILON = 3.0  # the block's --target-epsilon
ROUNDS = 2  # the block's --rounds


def test_the_deployment_walkthrough_runs_as_written(tmp_path: Path) -> None:
    # Execute: every command succeeds (run_section asserts it)
    _, out = run_section(HEADING, tmp_path / "fedcare", timeout=1200)
    # Assert: and said what the README says it does
    assert "coordinator listening on 127.0.0.1:9092" in out, out[-3000:]
    for site in ("cleveland", "hungarian", "va"):
        assert re.search(rf"{site}: online", out), out[-3000:]
    assert re.search(rf"round\s+{ROUNDS}/{ROUNDS}\s+mean 0\.\d+", out), out[-3000:]
    assert "run finished" in out and "refused" not in out, out[-3000:]
    epsilon = re.search(r"cumulative ε = ([0-9.]+) at δ", out)
    assert epsilon and 0 < float(epsilon.group(1)) <= TARGET_EPSILON, out[-3000:]
    assert "entries, hash chain verified" in out
    assert out.count("site daemon in") == 3 and "coordinator stopped" in out
