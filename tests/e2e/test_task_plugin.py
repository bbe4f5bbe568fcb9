"""End to end: the example task package (examples/task-plugin/) installs from its folder into an
environment of its own, and ``fedcare simulate`` finds it there (and only there) and federates it,
with and without DP.

The package is installed with ``pip install --target`` into a temporary folder that only the
commands of this test see (``PYTHONPATH``): fedcare's virtualenv is left as it was, and the
entry point is found from the package's ``*.dist-info`` in that folder, as at a site.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedcare.privacy.accounting import epsilon_from_events
from fedcare.privacy.ledger import PrivacyLedger

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "task-plugin"
TASK = "example-breast-cancer"
SITES = {"alpha": (158, 69), "beta": (139, 60), "gamma": (100, 43)}  # train, test rows
FEDCARE = [sys.executable, "-m", "fedcare"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder holding a copy of the example (as ``examples/task-plugin``, where its
    ``simulate.toml`` looks for the sites) and the environment that sees it installed."""
    where = tmp_path_factory.mktemp("plugin")
    copy = where / "examples" / "task-plugin"
    shutil.copytree(
        EXAMPLE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    target = where / "site-packages"
    install = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-index", "--no-deps", "--no-build-isolation", "--target", str(target), str(copy),
    ]  # fmt: skip
    result = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (target / "fedcare_example_task-0.1.0.dist-info" / "entry_points.txt").is_file()
    paths = [str(target), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(paths), "COLUMNS": "200"}
    return where, env


def _simulate(where: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [*FEDCARE, "simulate", "--config", "examples/task-plugin/simulate.toml", *args]
    return subprocess.run(command, cwd=where, env=env, capture_output=True, text=True, timeout=600)


def _ledger(out: Path, site: str) -> list[Any]:
    return list(PrivacyLedger(out / "sites" / site).read())


def test_a_task_not_installed_here_is_refused_naming_the_installed_ones(
    workspace: tuple[Path, dict[str, str]],
) -> None:
    # Prepare: the same command, without the folder the package is installed in
    where, env = workspace
    bare = env | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    # Execute
    result = _simulate(where, bare, "--out", "refused")
    # Assert
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert lines[0].endswith(
        f"simulate.toml: unknown task {TASK!r}; installed tasks: heart-disease; a task is a "
        "package declaring a 'fedcare.tasks' entry point; install it in this environment "
        "(README, 'Task plugins')"
    )
    assert not (where / "refused").exists()


def test_the_installed_example_task_is_federated_and_learns(
    workspace: tuple[Path, dict[str, str]],
) -> None:
    # Prepare: each site standardises with its own statistics, so the run is reproducible from
    # its seed (the federation's statistics are noised afresh every run: see the DP test)
    where, env = workspace
    # Execute
    result = _simulate(where, env, "--rounds", "2", "--preprocessing", "site", "--out", "plain")
    # Assert: the run, its three sites and a model that learned (majority class: 0.63)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "round   2/2" in result.stdout
    summary = json.loads((where / "plain" / "summary.json").read_text())
    assert (summary["task"], summary["scenario"]) == (TASK, "examples/task-plugin/sites")
    assert (summary["strategy"], summary["rounds"], summary["privacy"]) == ("fedavg", 2, None)
    assert {name: (s["n_train"], s["n_test"]) for name, s in summary["sites"].items()} == SITES
    assert summary["mean_accuracy"] > 0.7
    assert all(s["auroc"] > 0.75 for s in summary["sites"].values())
    assert summary["baselines"]["pooled"]["mean_accuracy"] > 0.8
    rounds = json.loads((where / "plain" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert set(rounds[-1]["train_loss"]) == set(SITES)
    for site in SITES:  # without DP, no training is spent on a ledger
        assert [e for e in _ledger(where / "plain", site) if e.kind == "dp-sgd"] == []


def test_a_dp_round_with_the_example_task_is_spent_on_every_sites_ledger(
    workspace: tuple[Path, dict[str, str]],
) -> None:
    # Prepare
    where, env = workspace
    # Execute
    result = _simulate(
        where, env, "--rounds", "1", "--dp", "--noise-multiplier", "1.0", "--out", "dp"
    )
    # Assert
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((where / "dp" / "summary.json").read_text())
    privacy = summary["privacy"]
    assert set(privacy["sites"]) == set(SITES)
    for site, (n_train, _) in SITES.items():
        reported = privacy["sites"][site]
        events = _ledger(where / "dp", site)
        rounds = [e for e in events if e.kind == "dp-sgd" and e.round == 1]
        assert len(rounds) == 1, events  # the federated round: one DP-SGD event
        assert (rounds[0].noise_multiplier, rounds[0].max_grad_norm) == (1.0, 1.0)
        assert rounds[0].sample_rate == pytest.approx(8 / n_train, rel=0.2)  # batch 8 of n
        assert [e.kind for e in events if e.round == 0] == ["gaussian"]  # the statistics
        assert (reported["rounds_trained"], reported["noise_multiplier"]) == (1, 1.0)
        epsilon = epsilon_from_events(events, reported["delta"])  # from the ledger alone
        assert reported["epsilon"] == pytest.approx(epsilon, rel=1e-6)
        assert 0 < epsilon <= reported["max_epsilon"]


def test_a_release_of_the_example_task_declares_its_raw_inputs(
    workspace: tuple[Path, dict[str, str]],
) -> None:
    # Prepare: what fedcare registry release writes into a bundle's preprocessing.json
    where, env = workspace
    code = (
        "import json\n"
        "from fedcare.bundle import preprocessing_record\n"
        f"record = preprocessing_record({TASK!r}, 'logreg', 0, [0.0] * 5, [1.0] * 5)\n"
        "print(json.dumps([record['inputs'], record['input_rules']['worst_area']]))\n"
    )
    # Execute
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=where, env=env, capture_output=True, text=True
    )
    # Assert
    assert result.returncode == 0, result.stderr[-2000:]
    inputs, area = json.loads(result.stdout)
    assert inputs == [
        "mean_radius", "mean_texture", "mean_smoothness", "worst_area", "worst_concave_points",
    ]  # fmt: skip
    assert (area["minimum"], area["maximum"], area["levels"]) == (0.0, 6000.0, None)


def test_the_site_files_are_what_make_sites_writes(tmp_path: Path) -> None:
    # Prepare
    make_sites = runpy.run_path(str(EXAMPLE / "make_sites.py"))
    # Execute
    written = make_sites["write_sites"](tmp_path)
    # Assert
    assert sorted(p.name for p in written) == sorted(f"{site}.csv" for site in SITES)
    for path in written:
        assert path.read_bytes() == (EXAMPLE / "sites" / path.name).read_bytes(), path.name
