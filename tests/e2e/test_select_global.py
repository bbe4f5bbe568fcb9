"""``fedcare bench select-global`` runs a real simulation on validation rows and ranks it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_select_global_scores_the_default_on_validation_rows(tmp_path: Path) -> None:
    out = tmp_path / "select"
    result = subprocess.run(
        [sys.executable, "-m", "fedcare", "bench", "select-global", "--out", str(out),
         "--seeds", "0", "--settings", "default"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation accuracy" in result.stdout
    (entry,) = json.loads((out / "selection.json").read_text())
    assert entry["name"] == "default" and entry["accuracy"] == [entry["mean_accuracy"]]
    rounds = json.loads((out / "runs" / "default-seed0" / "rounds.json").read_text())
    last = rounds[-1]["sites"]
    assert entry["per_site_accuracy"] == {s: m["accuracy"] for s, m in last.items()}
    # scored on the validation part (34 % of each site's training rows), not on the test rows
    # (104, 89, 16 and 45 rows): every accuracy is a count over the validation part's size
    validation_rows = {"cleveland": 68, "hungarian": 59, "switzerland": 11, "va": 29}
    for site, n in validation_rows.items():
        correct = last[site]["accuracy"] * n
        assert correct == pytest.approx(round(correct), abs=1e-6), site


def test_select_global_refuses_an_unknown_setting_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fedcare", "bench", "select-global", "--out", str(tmp_path),
         "--settings", "model-cnn"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "unknown setting(s) model-cnn" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
