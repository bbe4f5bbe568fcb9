"""End to end in simulation: a malicious site cannot break the model.

Cleveland (the largest hospital) turns hostile and sends NaNs, wrong shapes, or its update
scaled x100 in every round. The coordinator rejects what fails validation, records each
rejection with its reason, and the robust run ends within 2 points of the clean one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedcare.config import Preprocessing, RunConfig, StrategyName
from fedcare.simulations import simulate
from fedcare.simulations.adversaries import Attack

pytestmark = pytest.mark.slow
# half the default: converged; each site's own statistics, so the clean and attacked runs are
# the same run but for the attack (the federation's are noised afresh each run)
ROBUST = RunConfig(strategy=StrategyName.FEDTRIMMEDAVG, rounds=10, preprocessing=Preprocessing.SITE)
ATTACKER = "cleveland"
EXPECTED_REASON = {
    Attack.NAN: "array 'weight' holds NaN or Inf",
    Attack.WRONG_SHAPE: "array 'weight' has shape (1, 12), expected (1, 13)",
    Attack.SCALE100: "exceeds the bound 2",
}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return simulate(ROBUST, tmp_path_factory.mktemp("clean"))


@pytest.mark.parametrize("attack", [Attack.NAN, Attack.WRONG_SHAPE, Attack.SCALE100])
def test_robust_run_withstands_a_malicious_site(
    attack: Attack, clean_run: dict[str, Any], tmp_path: Path
) -> None:
    summary = simulate(ROBUST, tmp_path, attacks={ATTACKER: attack})
    assert summary["attacks"] == {ATTACKER: str(attack)}
    rejected = summary["rejected"]
    assert {r["site"] for r in rejected} == {ATTACKER}
    assert all(EXPECTED_REASON[attack] in r["reason"] for r in rejected), rejected
    rounds = {r["round"] for r in rejected}
    if attack is Attack.SCALE100:
        assert 1 in rounds  # round 1's honest update is large enough for x100 to stand out
    else:
        assert rounds == set(range(1, ROBUST.rounds + 1))
    assert abs(summary["mean_accuracy"] - clean_run["mean_accuracy"]) <= 0.02
