"""End to end: DP-SGD at every simulated site, budgets kept, refusals tolerated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedcare.config import Preprocessing, RunConfig
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.simulations import simulate

pytestmark = pytest.mark.slow
ROUNDS = 5


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("dp")
    # each site's own statistics: at epsilon 1 the statistics release takes a quarter of the
    # target (sigma ~14.6) and a short run on them can end as a one-class model (seen: 0.363)
    config = RunConfig(dp=True, target_epsilon=1.0, rounds=ROUNDS, preprocessing=Preprocessing.SITE)
    # Switzerland's privacy officer set a budget this run cannot fit in.
    summary = simulate(config, out, site_budgets={"switzerland": 0.05})
    return out, summary


def test_every_site_stays_within_the_target(dp_run: tuple[Path, dict[str, Any]]) -> None:
    _, summary = dp_run
    privacy = summary["privacy"]
    assert privacy["accountant"] == "rdp" and 0 < privacy["delta"] <= 1e-5
    for name in ("cleveland", "hungarian", "va"):
        site = privacy["sites"][name]
        assert 0.5 < site["epsilon"] <= 1.0, name
        assert site["noise_multiplier"] > 1.0 and 0 < site["sample_rate"] < 1
        assert site["rounds_trained"] == ROUNDS and site["max_epsilon"] == 10.0


def test_exhausted_site_refuses_sends_nothing_and_the_run_completes(
    dp_run: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = dp_run
    assert summary["privacy"]["sites"]["switzerland"]["epsilon"] == 0.0
    assert PrivacyLedger(out / "sites" / "switzerland").read() == ()
    refusals = {(r["site"], r["round"], r["reason"]) for r in summary["refusals"]}
    assert refusals == {
        ("switzerland", r, "privacy-budget-exhausted") for r in range(1, ROUNDS + 1)
    }
    rounds = json.loads((out / "rounds.json").read_text())
    for record in rounds[1:]:
        assert set(record["epsilon"]) == {"cleveland", "hungarian", "va"}
        assert record["train_loss"] == {}  # a DP reply carries no training loss
        assert "switzerland" not in record["epsilon"]
    assert 0.5 < summary["mean_accuracy"] <= 1.0


def test_epsilon_is_plotted_per_site(dp_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = dp_run
    assert (out / "epsilon_per_site.png").read_bytes()[:4] == b"\x89PNG"
