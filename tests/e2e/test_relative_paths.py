"""End to end: the deployed path with relative paths only, as a user pastes the README from a
folder of their own - PKI, site keys, the coordinator, two DP site daemons, status, a one-round
DP run that trains, and then a run every site refuses (its privacy budget is spent), which ends
non-zero with one line per site (issue #9, items 1 and 3). Every path on every command line is
relative to the test's working folder; every process is stopped by pid at the end. One round
each: a deployed round costs about 30 s on a loaded two-core machine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fedcare.errors import ExitCode
from fedcare.processes import _processes
from tests.deployed_federation import fedcare, fedcare_all

pytestmark = pytest.mark.slow
SITES = ("cleveland", "va")
COORD = "fed/coordinator"
BUDGET_LINE = (
    "  {site}: every round refused: privacy-budget-exhausted — its privacy budget is spent (an "
    "earlier non-private run makes ε infinite); see 'fedcare privacy report --state <site state>'"
)


def test_the_deployed_path_works_with_relative_paths_and_a_run_nobody_trained_in_fails(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: the sites' data files beside the user's working folder, named relatively
    (tmp_path / "data").mkdir()
    for site in SITES:
        (tmp_path / "data" / f"{site}.data").write_text(site_paths[site].read_text())
    started: list[Path] = []
    try:
        # Execute: the walkthrough, every path relative to tmp_path
        made = fedcare_all(
            ("pki", "init", "--dir", COORD),
            *(("site", "keygen", "--state", f"fed/{site}", "--name", site) for site in SITES),
            cwd=tmp_path,
        )
        assert [m.returncode for m in made] == [0] * len(made), [m.stderr for m in made]
        for site in SITES:
            added = fedcare(
                "pki", "add-site", site, "--dir", COORD, "--public-key", f"fed/{site}/site.pub",
                cwd=tmp_path,
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
        started += [tmp_path / COORD / f"{name}.pid" for name in ("superlink", "frontdoor")]
        started += [tmp_path / COORD / "executor.pid"]
        coordinator = fedcare("coordinator", "start", "--dir", COORD, cwd=tmp_path)
        assert coordinator.returncode == 0, coordinator.stderr
        address = re.search(r"listening on (\S+)", coordinator.stdout).group(1)  # type: ignore[union-attr]
        for site in SITES:
            started += [tmp_path / "fed" / site / "supernode.pid"]
            started += [tmp_path / "fed" / site / "executor.pid"]
        sites = fedcare_all(
            *(
                ("site", "start", "--name", site, "--data", f"data/{site}.data",
                 "--state", f"fed/{site}", "--ca", f"{COORD}/ca.crt", "--coordinator", address,
                 "--max-epsilon", "1.5")
                for site in SITES
            ),
            cwd=tmp_path,
        )  # fmt: skip
        assert [s.returncode for s in sites] == [0, 0], [s.stderr for s in sites]
        status = fedcare("coordinator", "status", "--dir", COORD, cwd=tmp_path)
        assert status.returncode == 0 and status.stdout.count(": online") == 2, status.stdout
        run = ("coordinator", "run", "--dir", COORD, "--min-sites", "2", "--strategy", "fedavg")
        trained = fedcare(
            *run, "--rounds", "1", "--dp", "--target-epsilon", "1", "--timeout", "300",
            cwd=tmp_path,
        )  # fmt: skip
        refused = fedcare(
            *run, "--rounds", "1", "--dp", "--target-epsilon", "5", "--timeout", "300",
            cwd=tmp_path,
        )  # fmt: skip

        # Assert: the DP run trained at both sites within their budget
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert "run finished" in trained.stdout and "did not train" not in trained.stdout
        first, second = sorted((tmp_path / COORD / "runs").iterdir())
        rounds = json.loads((first / "rounds.json").read_text())
        assert [r["round"] for r in rounds] == [0, 1]
        assert rounds[1]["refused"] == {} and rounds[1]["rejected"] == {}
        assert set(rounds[1]["epsilon"]) == set(SITES)
        assert all(0 < eps <= 1.0 for eps in rounds[1]["epsilon"].values())
        # ... and the next run, whose ε 5 no site's budget (1.5) has left, learned nothing
        assert refused.returncode == ExitCode.NO_TRAINING, refused.stderr[-3000:]
        lines = refused.stderr.strip().splitlines()
        assert lines[0] == (
            "error: no site trained in any of the 1 round(s); the model is still the initial one"
        )
        assert lines[1:] == [BUDGET_LINE.format(site=site) for site in SITES], refused.stderr
        assert "run finished" not in refused.stdout
        assert json.loads((second / "rounds.json").read_text())[1]["refused"] == dict.fromkeys(
            SITES, "privacy-budget-exhausted"
        )
    finally:
        pids = [json.loads(p.read_text())["pid"] for p in started if p.exists()]
        fedcare_all(*(("site", "stop", "--state", f"fed/{site}") for site in SITES), cwd=tmp_path)
        fedcare("coordinator", "stop", "--dir", COORD, cwd=tmp_path)
        alive = [pid for pid, group, _ in _processes() if pid in pids or group in pids]
        assert not alive, f"processes left running: {alive}"
