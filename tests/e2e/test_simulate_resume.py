"""End to end: ``fedcare simulate --resume`` after the simulation was killed (SIGKILL, the whole
process group, Ray included) part-way: the run finishes as if it had never stopped - the same
final weights as an uninterrupted run with the same seed, and one continuous ``rounds.json``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedcare.weights import read_weights

pytestmark = pytest.mark.slow
FEDCARE = [sys.executable, "-m", "fedcare"]
ROUNDS = 4
# each site's own statistics: the federation's are noised anew each run, so only a run that
# releases none can equal an uninterrupted one exactly
# (FedYogi: moments)
ARGS = ["--rounds", str(ROUNDS), "--strategy", "fedyogi", "--seed", "3", "--preprocessing", "site"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run(
        [*FEDCARE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def _killed_after_round(out: Path, cwd: Path, after_round: int) -> None:
    """Start the simulation and SIGKILL its process group once round ``after_round`` has a
    checkpoint."""
    marker = out / "checkpoint" / f"round-{after_round:04d}.json"
    child = subprocess.Popen(
        [*FEDCARE, "simulate", *ARGS, "--out", str(out)],
        cwd=cwd, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert child.poll() is None, "the simulation ended before it could be interrupted"
            assert time.monotonic() < deadline, f"no {marker.name} within 10 minutes"
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    assert not (out / "summary.json").exists(), "the simulation finished before the kill"


def test_a_resumed_simulation_ends_with_the_weights_of_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    # Prepare: the reference, uninterrupted; then the same run killed after round 1.
    whole = _cli("simulate", *ARGS, "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    _killed_after_round(tmp_path / "resumed", tmp_path, after_round=1)

    # Execute
    started = time.perf_counter()
    resumed = _cli("simulate", "--resume", "resumed", cwd=tmp_path)
    resume_s = time.perf_counter() - started

    # Assert: it finishes, with the same weights (float tolerance: the order in which site
    # updates are summed may differ) and one continuous history, every round once.
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    expected = read_weights(tmp_path / "whole" / "global_model.safetensors")
    actual = read_weights(tmp_path / "resumed" / "global_model.safetensors")
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        assert actual[name].numpy() == pytest.approx(tensor.numpy(), rel=1e-4, abs=1e-5), name
    rounds = json.loads((tmp_path / "resumed" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == list(range(ROUNDS + 1))
    reference = json.loads((tmp_path / "whole" / "rounds.json").read_text())
    for got, want in zip(rounds, reference, strict=True):
        assert set(got["sites"]) == set(want["sites"])
        for site, scores in want["sites"].items():
            assert got["sites"][site]["accuracy"] == pytest.approx(scores["accuracy"], abs=1e-6)
    checkpoint = json.loads((tmp_path / "resumed" / "checkpoint" / "round-0004.json").read_text())
    assert [r["from_round"] for r in checkpoint["resumes"]] != []
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["rounds"] == ROUNDS
    leftovers = [p for p in (tmp_path / "resumed").rglob("*.tmp")]
    assert leftovers == []
    print(f"resumed from round {checkpoint['resumes'][0]['from_round']} in {resume_s:.1f} s")


def test_resume_refuses_other_options_and_a_folder_it_cannot_resume(tmp_path: Path) -> None:
    mixed = _cli("simulate", "--resume", "somewhere", "--rounds", "5", cwd=tmp_path)
    assert mixed.returncode != 0
    assert "--resume continues a run with its own settings; drop --rounds" in mixed.stderr
    (tmp_path / "empty").mkdir()
    empty = _cli("simulate", "--resume", "empty", cwd=tmp_path)
    assert empty.returncode != 0
    assert "is not a simulation folder fedcare can resume" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1
