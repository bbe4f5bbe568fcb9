"""End to end in simulation: SecAgg+ gives FedAvg's aggregate and survives a site dropping out
mid-round (with Opacus DP: ``test_secure_aggregation_dp.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedcare.config import Preprocessing, RunConfig, StrategyName
from fedcare.server.app import WEIGHTS_FILE
from fedcare.simulations import simulate
from fedcare.simulations.adversaries import Attack

pytestmark = pytest.mark.slow
ROUNDS = 2
# Flower quantises each clipped update to 22 bits over [-bound, bound] (bound = 2 here):
# about 1e-6 per value, stochastically rounded, so a few 1e-6 after averaging.
TOLERANCE = 5e-5
STAGES = ["setup", "share_keys", "collect_masked_vectors", "unmask"]


def _final_weights(out: Path) -> dict[str, np.ndarray]:
    return load_file(str(out / WEIGHTS_FILE))


def _assert_same_model(a: Path, b: Path) -> None:
    first, second = _final_weights(a), _final_weights(b)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_allclose(first[name], second[name], rtol=0, atol=TOLERANCE)


def test_secure_aggregation_gives_the_fedavg_aggregate(tmp_path: Path) -> None:
    # each site's own statistics: both runs standardise alike (the federation's are noised anew)
    plain = RunConfig(strategy=StrategyName.FEDAVG, rounds=ROUNDS, preprocessing=Preprocessing.SITE)
    simulate(plain, tmp_path / "plain")
    summary = simulate(plain.replace(secure_aggregation=True), tmp_path / "secagg")
    assert summary["secure_aggregation"] is True
    assert summary["refusals"] == [] and summary["rejected"] == []
    _assert_same_model(tmp_path / "plain", tmp_path / "secagg")
    rounds = json.loads((tmp_path / "secagg" / "rounds.json").read_text())
    assert rounds[-1]["mean_accuracy"] > rounds[0]["mean_accuracy"] + 0.05  # the model moved
    for site in ("cleveland", "hungarian", "switzerland", "va"):
        log = tmp_path / "secagg" / "sites" / site / "audit-log.jsonl"
        train = [
            e for e in map(json.loads, log.read_text().splitlines()) if e["message_type"] == "train"
        ]
        assert [e["secure_aggregation_stage"] for e in train] == STAGES * ROUNDS
        assert all(e["arrays"] == [] for e in train)  # only masked bytes left the site


def test_a_site_dropping_out_mid_round_is_tolerated(tmp_path: Path) -> None:
    """VA joins each round (keys exchanged), then fails while training: SecAgg+ removes its
    masks from the others' shares and the round completes with the other three updates."""
    config = RunConfig(
        strategy=StrategyName.FEDAVG, rounds=ROUNDS, preprocessing=Preprocessing.SITE
    )
    dropout = {"va": Attack.DROPOUT}
    simulate(config, tmp_path / "plain", attacks=dropout)
    summary = simulate(
        config.replace(secure_aggregation=True), tmp_path / "secagg", attacks=dropout
    )
    assert {(r["site"], r["round"]) for r in summary["refusals"]} == {
        ("va", r) for r in range(1, ROUNDS + 1)
    }
    _assert_same_model(tmp_path / "plain", tmp_path / "secagg")
