"""End to end in simulation: SecAgg+ and Opacus DP-SGD together, with a site that declines
every round for its budget after joining the protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.config import Preprocessing, RunConfig
from fedcare.simulations import simulate

pytestmark = pytest.mark.slow


def test_secure_aggregation_runs_with_dp(tmp_path: Path) -> None:
    """Opacus DP-SGD at every site, SecAgg+ over the clipped updates, and Switzerland declining
    every round (budget) after joining the protocol."""
    # each site's own statistics: a 3-round run at epsilon 1 on the federation's (sigma ~14.6)
    # can end as a one-class model (seen: 0.363)
    config = RunConfig(
        dp=True,
        target_epsilon=1.0,
        rounds=3,
        secure_aggregation=True,
        preprocessing=Preprocessing.SITE,
    )
    summary = simulate(config, tmp_path, site_budgets={"switzerland": 0.05})
    for name in ("cleveland", "hungarian", "va"):
        assert 0.5 < summary["privacy"]["sites"][name]["epsilon"] <= 1.0
    assert {(r["site"], r["reason"]) for r in summary["refusals"]} == {
        ("switzerland", "privacy-budget-exhausted")
    }
    assert 0.5 < summary["mean_accuracy"] <= 1.0
