"""End to end: the real ServerApp/ClientApp in Flower's simulation engine on the real data."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedcare.config import RunConfig, StrategyName
from fedcare.simulations import runner, simulate

pytestmark = pytest.mark.slow
SITES = {"cleveland", "hungarian", "switzerland", "va"}
FEDCARE = [sys.executable, "-m", "fedcare"]


def _check_schema(summary: dict[str, Any]) -> None:
    """summary.json as documented in README ("Run folder")."""
    types = {"scenario": str, "task": str, "strategy": str, "rounds": int, "seed": int}
    for key, kind in (types | {"mean_accuracy": float}).items():
        assert isinstance(summary[key], kind), key
    assert set(summary["sites"]) == SITES
    for site in summary["sites"].values():
        assert isinstance(site["n_train"], int) and isinstance(site["n_test"], int)
        assert isinstance(site["accuracy"], float)
        assert site["auroc"] is None or isinstance(site["auroc"], float)
    pooled = summary["baselines"]["pooled"]
    assert isinstance(pooled["mean_accuracy"], float) and set(pooled["sites"]) == SITES
    assert set(summary["baselines"]["local"]) == SITES
    for result in summary["baselines"]["local"].values():
        assert isinstance(result["mean_accuracy"], float) and set(result["sites"]) == SITES
    assert summary["privacy"] is None


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[Any]]:
    out = tmp_path_factory.mktemp("sim")
    seen: list[Any] = []
    summary = simulate(RunConfig(rounds=8), out, on_round=lambda record, total: seen.append(record))
    return out, summary, seen


def test_simulation_uses_the_deployment_apps(
    default_run: tuple[Path, dict[str, Any], list[Any]],
) -> None:
    out, _, seen = default_run
    assert runner.server_app is importlib.import_module("fedcare.server.app").app
    assert runner.client_app is importlib.import_module("fedcare.client.app").app
    components = (out / "flower-app" / "pyproject.toml").read_text()
    assert 'serverapp = "fedcare.server.app:app"' in components
    assert 'clientapp = "fedcare.client.app:app"' in components
    # The ServerApp's own progress events arrived in this process: it ran here, per round.
    assert [record.round for record in seen] == list(range(9))
    assert all(set(record.sites) == SITES for record in seen)


def test_accuracy_lands_in_band_and_beats_local_models(
    default_run: tuple[Path, dict[str, Any], list[Any]],
) -> None:
    _, summary, seen = default_run
    _check_schema(summary)
    assert 0.68 <= summary["mean_accuracy"] <= 0.85, summary["mean_accuracy"]
    assert summary["mean_accuracy"] > seen[0].mean_accuracy + 0.1
    assert {s["n_train"] for s in summary["sites"].values()} == {199, 172, 30, 85}


def test_run_folder_holds_every_artifact(
    default_run: tuple[Path, dict[str, Any], list[Any]],
) -> None:
    out, summary, _ = default_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    rounds = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == list(range(9))
    assert (out / "global_model.safetensors").stat().st_size > 0
    for plot in ("accuracy_per_site.png", "federated_vs_baselines.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run(
        [*FEDCARE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_runs_fedprox_with_config_file_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text('[run]\nrounds = 9\nstrategy = "fedavg"\n')
    overrides = ["--rounds", "3", "--strategy", str(StrategyName.FEDPROX)]
    result = _cli("simulate", "--config", "run.toml", *overrides, "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["strategy"], summary["rounds"]) == ("fedprox", 3)
    assert "round   3/3" in result.stdout and "cleveland" in result.stdout
    _check_schema(summary)


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
