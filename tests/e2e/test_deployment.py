"""End to end on loopback: PKI, a coordinator (SuperLink over TLS with site authentication),
three hospital site daemons (SuperNodes) with real data, a SecAgg+ run with DP, a 3-round plain
run, the sites' audit logs, and the refusals: unregistered key, another federation's CA,
plaintext, an unapproved app.

Every process is started through the fedcare CLI, writes to log files, and is stopped by pid
(helpers included) at the end.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from fedcare import messages as keys
from fedcare.processes import _processes
from fedcare.superexec import fab_hash

pytestmark = pytest.mark.slow
SITES = ("cleveland", "hungarian", "va")
FEDCARE = [sys.executable, "-m", "fedcare"]
ROUNDS = 3


CompletedProcess = subprocess.CompletedProcess[str]


def fedcare(*args: str, timeout: float = 600) -> CompletedProcess:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run(
        [*FEDCARE, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def fedcare_all(*commands: tuple[str, ...], timeout: float = 600) -> list[CompletedProcess]:
    """Independent fedcare commands (each on its own site's folder) run at once: most of a
    command's time is its start-up, so the sites need not wait for each other."""
    env = os.environ | {"COLUMNS": "200"}
    pipe = subprocess.PIPE
    processes = [
        subprocess.Popen([*FEDCARE, *args], stdout=pipe, stderr=pipe, text=True, env=env)
        for args in commands
    ]
    results: list[CompletedProcess] = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout)
            results.append(CompletedProcess(process.args, process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def stock_app(folder: Path) -> Path:
    """A stock Flower app (other code than fedcare's), the same bundle wherever it is written."""
    from fedcare.flower_app import write_flower_app

    stock = "fedcare.simulations.benchmarks.stock_app"
    config = {"rounds": 1, "min-sites": 3, "out-dir": "stock-out"}  # out-dir: set per run
    return write_flower_app(folder, config, f"{stock}:server", f"{stock}:client")


def audit_entries(state: Path, run_id: str) -> list[dict[str, Any]]:
    """A site's audit-log entries for one run (none while the site has not written its log)."""
    log = state / "audit-log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return [entry for entry in map(json.loads, lines) if entry["run_id"] == run_id]


def verify_audit_logs(root: Path) -> None:
    """``fedcare site audit --verify`` passes at every site."""
    checks = fedcare_all(
        *(("site", "audit", "--state", str(root / site), "--verify") for site in SITES)
    )
    for site, check in zip(SITES, checks, strict=True):
        assert check.returncode == 0, (site, check.stderr)


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, site_paths: dict[str, Path]
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("federation")
    coord = root / "coordinator"
    started: list[Path] = []
    try:
        # The owner's PKI and each hospital's key pair are independent: made at once.
        made = fedcare_all(
            ("pki", "init", "--dir", str(coord)),
            *(("site", "keygen", "--state", str(root / site), "--name", site) for site in SITES),
        )
        assert [m.returncode for m in made] == [0] * len(made), [m.stderr for m in made]
        for site in SITES:  # the owner registers each site.pub (one registry: one at a time)
            public_key = str(root / site / "site.pub")
            added = fedcare(
                "pki", "add-site", site, "--dir", str(coord), "--public-key", public_key
            )
            assert added.returncode == 0, added.stderr
        stock_hash = fab_hash(stock_app(root / "stock" / "app"))  # run by a later test
        result = fedcare("coordinator", "start", "--dir", str(coord), "--approve-app", stock_hash)
        started += [coord / "superlink.pid", coord / "frontdoor.pid", coord / "executor.pid"]
        assert result.returncode == 0, result.stderr
        info = json.loads((coord / "frontdoor.pid").read_text())  # sites reach the front door
        address = f"{info['host']}:{info['port']}"
        assert info["port"] != json.loads((coord / "superlink.pid").read_text())["port"]
        for site in SITES:
            started += [root / site / "supernode.pid", root / site / "executor.pid"]
        results = fedcare_all(*(
            ("site", "start", "--name", site, "--data", str(site_paths[site]),
             "--state", str(root / site), "--ca", str(coord / "ca.crt"),
             "--coordinator", address, "--allow-non-dp")
            for site in SITES
        ))  # fmt: skip
        for site, result in zip(SITES, results, strict=True):
            assert result.returncode == 0, (site, result.stderr)
        yield {"root": root, "coord": coord, "address": address, "port": info["port"]}
    finally:
        pids = [json.loads(p.read_text())["pid"] for p in started if p.exists()]
        fedcare_all(*(("site", "stop", "--state", str(root / site)) for site in SITES))
        fedcare("coordinator", "stop", "--dir", str(coord))
        alive = [pid for pid, group, _ in _processes() if pid in pids or group in pids]
        assert not alive, f"processes left running: {alive}"


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
    assert {site: heads[site]["head"]["entries"] for site in SITES} == dict.fromkeys(SITES, 1)
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
            assert set(entry["metrics"][keys.METRICS]) == keys.DP_TRAIN_METRICS  # no train loss


@pytest.fixture(scope="module")
def finished_run(
    federation: dict[str, Any], secagg_run: dict[str, Any]
) -> tuple[list[dict[str, Any]], str, str]:
    """A 3-round plain run, after the DP run (``secagg_run``) whatever the test order."""
    coord = federation["coord"]
    status = fedcare("coordinator", "status", "--dir", str(coord))
    assert status.returncode == 0 and status.stdout.count(": online") == 3, status.stdout
    before = set((coord / "runs").iterdir())  # the DP run made the folder
    result = fedcare(
        "coordinator", "run", "--dir", str(coord), "--min-sites", "3", "--rounds", str(ROUNDS),
        "--strategy", "fedavg", "--timeout", "480",
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
        assert len(entries) == 2 * ROUNDS + 1  # round-0 evaluation, then train + evaluate per round
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


def test_unregistered_site_key_is_refused(
    federation: dict[str, Any], site_paths: dict[str, Path]
) -> None:
    coord, rogue = federation["coord"], federation["root"] / "rogue"
    assert fedcare("site", "keygen", "--state", str(rogue)).returncode == 0  # never registered
    result = fedcare(
        "site", "start", "--name", "rogue", "--data", str(site_paths["va"]),
        "--state", str(rogue), "--ca", str(coord / "ca.crt"),
        "--coordinator", federation["address"], "--allow-non-dp",
    )  # fmt: skip
    assert result.returncode != 0
    assert "refused this site's key (not registered)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_site_with_another_federations_ca_is_refused(
    federation: dict[str, Any], site_paths: dict[str, Path], tmp_path: Path
) -> None:
    assert fedcare("pki", "init", "--dir", str(tmp_path / "other")).returncode == 0
    result = fedcare(
        "site", "start", "--name", "va", "--data", str(site_paths["va"]),
        "--state", str(tmp_path / "va"),
        "--key", str(federation["root"] / "va" / "site.key"),
        "--ca", str(tmp_path / "other" / "ca.crt"), "--coordinator", federation["address"],
    )  # fmt: skip
    assert result.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


def test_plaintext_connections_are_refused(federation: dict[str, Any], tmp_path: Path) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", federation["port"], timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        connection.request("GET", "/")
        connection.getresponse()
    # Flower's own SuperNode in --insecure mode cannot join either.
    log = tmp_path / "insecure.log"
    with log.open("wb") as out:
        node = subprocess.run(
            [str(Path(sys.executable).parent / "flower-supernode"), "--insecure", "--superlink",
             federation["address"], "--max-retries", "2", "--max-wait-time", "20", "--port", "0"],
            stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False,
        )  # fmt: skip
    assert node.returncode != 0
    status = fedcare("coordinator", "status", "--dir", str(federation["coord"]))
    assert status.stdout.count(": online") == 3  # still only the three authenticated sites


def test_a_failing_serverapp_is_reported_not_waited_for(federation: dict[str, Any]) -> None:
    from fedcare.errors import FedcareError
    from fedcare.flower_app import write_flower_app
    from fedcare.server.coordinator import Coordinator

    coordinator = Coordinator(federation["coord"])
    out = coordinator.new_run_folder()
    bad = {"rounds": 0, "out-dir": str(out), "min-sites": 3}  # refused by the ServerApp itself
    coordinator.submit_app(write_flower_app(out / "app", bad))
    with pytest.raises(FedcareError, match=r"ended as finished:failed"):
        coordinator.follow(out, rounds=2, on_round=lambda _: None, timeout_s=240)


def test_an_unapproved_app_is_refused_by_every_site(federation: dict[str, Any]) -> None:
    """A run whose app bundle the sites did not approve (here: a stock Flower app that would
    run other code) is never launched at any site; each site records the refusal and answers
    at once with ``app-not-approved``, so the run ends instead of waiting for token expiry."""
    from fedcare.server.coordinator import Coordinator

    coordinator = Coordinator(federation["coord"])
    out = coordinator.new_run_folder()  # the coordinator approved this bundle; the sites did not
    coordinator.submit_app(stock_app(out / "app"), {"out-dir": str(out)})
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    try:
        deadline = time.monotonic() + 120
        refused: dict[str, list[dict[str, Any]]] = {}
        while time.monotonic() < deadline and len(refused) < len(SITES):
            for site in SITES:  # a site that has served no run yet has no audit log yet
                entries = audit_entries(federation["root"] / site, run_id)
                hits = [e for e in entries if e["kind"] == "refused-app"]
                if hits:
                    refused[site] = hits
            time.sleep(1)
        assert set(refused) == set(SITES)
        verify_audit_logs(federation["root"])
        for site in SITES:
            state = federation["root"] / site
            sent = [e for e in audit_entries(state, run_id) if e["kind"] != "refused-app"]
            assert sent == []  # nothing was sent for the unapproved run
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not coordinator.run_status(out)[0].startswith(
            "finished"
        ):
            time.sleep(2)
        assert coordinator.run_status(out)[0].startswith("finished")  # answered, not hung
    finally:
        coordinator.flwr("stop", run_id, "fedcare")
