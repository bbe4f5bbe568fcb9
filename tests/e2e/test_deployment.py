"""End to end on loopback, the runs: PKI, a coordinator (SuperLink behind its front door, with
site authentication), three hospital site daemons (SuperNodes) with real data, a SecAgg+ run with
DP, then a plain run, and what the sites' audit logs hold. The refusals (unregistered key, another
federation's CA, plaintext, an unapproved app) are in ``test_deployment_refusals.py``, on a
federation of their own, so the two modules run side by side.

Every process is started through the fedcare CLI (``tests/deployed_federation.py``), writes to
log files, and is stopped by pid (helpers included) at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from fedcare import messages as keys
from fedcare.errors import ExitCode
from tests.deployed_federation import audit_entries, fedcare, running_federation
from tests.deployed_federation import verify_audit_logs as verify_sites

pytestmark = pytest.mark.slow
SITES = ("cleveland", "hungarian", "va")
ROUNDS = 2
BUDGET_LINE = (
    "  {site}: every round refused: privacy-budget-exhausted — its privacy budget is spent (an "
    "earlier non-private run makes ε infinite); see 'fedcare privacy report --state <site state>'"
)


def verify_audit_logs(root: Path) -> None:
    verify_sites(root, SITES)


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, site_paths: dict[str, Path]
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("federation")
    with running_federation(root, {site: site_paths[site] for site in SITES}) as federation:
        yield federation


SECAGG_ROUNDS = 1


@pytest.fixture(scope="module")
def secagg_run(
    federation: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A SecAgg+ run with DP at the three sites, and the coordinator's ledger heads right after.

    The plain run (``finished_run``) records non-private rounds, which (rightly) spend each
    site's whole budget, so no DP run can follow it at the same sites: ``finished_run`` asks
    for this fixture first, so the DP run comes first in any test order."""
    config = tmp_path_factory.mktemp("secagg") / "secagg.toml"
    config.write_text(
        'strategy = "fedavg"\ndp = true\ntarget-epsilon = 1.0\nsecure-aggregation = true\n'
        "secagg-num-shares = 3\nsecagg-threshold = 2\n"
    )
    coord = federation["coord"]
    runs = coord / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    result = fedcare(
        "coordinator", "run", "--dir", str(coord), "--min-sites", "3", "--config", str(config),
        "--rounds", str(SECAGG_ROUNDS), "--timeout", "540",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = set(runs.iterdir()) - before
    return {
        "rounds": json.loads((run_dir / "rounds.json").read_text()),
        "run_id": json.loads((run_dir / "run.json").read_text())["run_id"],
        "heads": json.loads((coord / "ledger-heads.json").read_text()),  # signed, per site
    }


def test_secure_aggregation_with_dp_runs_across_the_deployed_sites(
    federation: dict[str, Any], secagg_run: dict[str, Any]
) -> None:
    """SecAgg+ and Opacus DP together on the real federation: the run completes, every site's
    ε stays within the target, and what each site sent for training is masked - no weights."""
    rounds, run_id, heads = secagg_run["rounds"], secagg_run["run_id"], secagg_run["heads"]
    assert [r["round"] for r in rounds] == list(range(SECAGG_ROUNDS + 1))
    for record in rounds[1:]:
        assert set(record["sites"]) == set(SITES)
        assert record["refused"] == {} and record["rejected"] == {}
        assert set(record["epsilon"]) == set(SITES)
        assert all(0 < eps <= 1.0 for eps in record["epsilon"].values())
    # the statistics release before round 1 (the default preprocessing) and the round
    entries = 1 + SECAGG_ROUNDS
    assert {site: heads[site]["head"]["entries"] for site in SITES} == dict.fromkeys(SITES, entries)
    verify_audit_logs(federation["root"])
    for site in SITES:
        state = federation["root"] / site
        train = [e for e in audit_entries(state, run_id) if e["message_type"] == "train"]
        stages = [e["secure_aggregation_stage"] for e in train]
        per_round = ["setup", "share_keys", "collect_masked_vectors", "unmask"]
        assert stages == per_round * SECAGG_ROUNDS
        for entry in train:
            assert entry["kind"] == "reply"
            assert entry["arrays"] == []  # the clear-text update never leaves; masked bytes do
        for entry in (e for e in train if e["secure_aggregation_stage"] == per_round[2]):
            masked = entry["configs"][RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
            assert masked["bytes"] > 0
            assert entry["metrics"]["fitres.num_examples"] == {"num_examples": 1.0}
            # no train loss; the evaluation of the model it trained from (round_loop) beside it
            assert set(entry["metrics"][keys.METRICS]) == keys.DP_TRAIN_METRICS | keys.EVAL_METRICS


@pytest.fixture(scope="module")
def finished_run(
    federation: dict[str, Any], secagg_run: dict[str, Any]
) -> tuple[list[dict[str, Any]], str, str]:
    """A plain run of ROUNDS rounds, after the DP run (``secagg_run``) whatever the test order."""
    coord = federation["coord"]
    status = fedcare("coordinator", "status", "--dir", str(coord))
    assert status.returncode == 0 and status.stdout.count(": online") == 3, status.stdout
    before = set((coord / "runs").iterdir())  # the DP run made the folder
    result = fedcare(
        "coordinator", "run", "--dir", str(coord), "--min-sites", "3", "--rounds", str(ROUNDS),
        "--strategy", "fedavg", "--timeout", "480", "--preprocessing", "site",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = set((coord / "runs").iterdir()) - before
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    return json.loads((run_dir / "rounds.json").read_text()), result.stdout, run_id


def test_three_hospitals_train_and_accuracy_improves(
    finished_run: tuple[list[dict[str, Any]], str, str],
) -> None:
    rounds, stdout, _ = finished_run
    assert [r["round"] for r in rounds] == list(range(ROUNDS + 1))
    assert all(set(r["sites"]) == set(SITES) for r in rounds)
    assert rounds[-1]["mean_accuracy"] > rounds[0]["mean_accuracy"] + 0.05
    assert f"round   {ROUNDS}/{ROUNDS}" in stdout


def test_audit_logs_verify_and_hold_only_weights_and_allowed_metrics(
    federation: dict[str, Any],
    finished_run: tuple[list[dict[str, Any]], str, str],
    site_paths: dict[str, Path],
) -> None:
    verify_audit_logs(federation["root"])
    for site in SITES:
        entries = audit_entries(federation["root"] / site, finished_run[2])
        # one train reply per round, each also evaluating the model it trained from (round r-1's),
        # then the evaluation of the last round's model (fedcare.server.round_loop)
        assert len(entries) == ROUNDS + 1
        assert [e["message_type"] for e in entries] == ["train"] * ROUNDS + ["evaluate"]
        raw_values = {
            v for line in site_paths[site].read_text().splitlines() for v in line.split(",")
        }
        for entry in entries:
            assert entry["kind"] == "reply"
            arrays = {(a["name"], tuple(a["shape"]), a["dtype"]) for a in entry["arrays"]}
            if entry["message_type"] == "train":
                assert arrays == {("weight", (1, 13), "float32"), ("bias", (1,), "float32")}
            else:
                assert arrays == set()
            assert set(entry["configs"]) == {keys.SITE, keys.LEDGER}
            assert set(entry["configs"][keys.SITE]) == {keys.SITE_NAME}
            assert set(entry["configs"][keys.LEDGER]) == {keys.LEDGER_HEAD, keys.LEDGER_SIGNATURE}
            metrics = entry["metrics"][keys.METRICS]
            assert set(metrics) <= keys.ALLOWED_METRICS
            assert metrics[keys.WEIGHT] == 1.0  # no training-set size leaves the site
            for name, value in metrics.items():
                if name != keys.WEIGHT:
                    assert f"{value}" not in raw_values, (site, name, value)


def test_a_dp_run_after_the_plain_run_trains_nowhere_and_fails_naming_each_site(
    federation: dict[str, Any], finished_run: tuple[list[dict[str, Any]], str, str]
) -> None:
    """Issue #9: the plain run (``finished_run``) recorded its rounds as infinite ε at every
    site, so every site refuses a DP run. That run learned nothing: it must end non-zero with
    one line per site saying why, never as "run finished"."""
    # Execute: a DP run at the same sites, after the plain run
    result = fedcare(
        "coordinator", "run", "--dir", str(federation["coord"]), "--min-sites", "3",
        "--rounds", "1", "--strategy", "fedavg", "--dp", "--target-epsilon", "1",
        "--timeout", "300",
    )  # fmt: skip
    # Assert
    assert result.returncode == ExitCode.NO_TRAINING, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        "error: no site trained in any of the 1 round(s); the model is still the initial one"
    )
    assert lines[1:] == [BUDGET_LINE.format(site=site) for site in sorted(SITES)], result.stderr
    assert "run finished" not in result.stdout
