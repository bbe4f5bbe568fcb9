"""End to end on loopback, the refusals: a site key the owner never registered, a site that
trusts another federation's CA, plaintext connections (raw HTTP and Flower's own insecure
SuperNode), a ServerApp that fails at once, and an app bundle the sites never approved - each
refused, on a real federation (``tests/deployed_federation.py``) of three hospital daemons.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedcare.superexec import fab_hash
from tests.deployed_federation import (
    audit_entries,
    fedcare,
    running_federation,
    stock_app,
    verify_audit_logs,
)

pytestmark = pytest.mark.slow
SITES = ("cleveland", "hungarian", "va")


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, site_paths: dict[str, Path]
) -> Iterator[dict[str, Any]]:
    """Three sites; the coordinator also approves a stock Flower app, which the sites do not."""
    root = tmp_path_factory.mktemp("federation")
    stock_hash = fab_hash(stock_app(root / "stock" / "app"))
    data = {site: site_paths[site] for site in SITES}
    with running_federation(root, data, approve_app=stock_hash) as federation:
        yield federation


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
        verify_audit_logs(federation["root"], SITES)
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
