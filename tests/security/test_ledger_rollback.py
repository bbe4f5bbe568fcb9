"""Issue #20, finding 5: a site's privacy ledger cannot silently go backwards.

Attack: a site that spent budget deletes its ledger (or starts from a fresh state folder) to get
a new budget; the unkeyed chain used to let it. Now every reply carries the ledger head signed
with the site key and the coordinator keeps the latest one per site (``ledger-heads.json``
beside ``sites.json``). Each test runs the real ServerApp loop with the registry, twice where
the attack happens between runs, over real ClientApps that train with Opacus DP-SGD
(:mod:`tests.inprocess_federation`); the declared reset goes through ``fedcare site start``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.client.daemon import SiteDaemon
from fedcare.config import RunConfig, StrategyName
from tests.inprocess_federation import (
    InProcessGrid,
    Node,
    registered_federation,
    run_server,
    site_keys,
)

SITES = {1: "cleveland", 2: "hungarian", 3: "va"}
DP = RunConfig(rounds=1, strategy=StrategyName.FEDAVG, dp=True, target_epsilon=1.0)
ATTACKER = "cleveland"


def run(nodes: dict[int, Node], registry: Path, out: Path, run_id: int) -> list[dict[str, Any]]:
    grid = InProcessGrid(nodes, run_id=run_id)
    return run_server(grid, DP, out, **{"site-registry": str(registry)})


@pytest.fixture
def after_one_run(
    tmp_path: Path, site_paths: dict[str, Path]
) -> tuple[dict[int, Node], Path, Path]:
    """Three registered sites that each spent ε ≈ 1 in one accepted DP run."""
    nodes, registry = registered_federation(tmp_path, SITES, site_paths)
    rounds = run(nodes, registry, tmp_path / "run-1", run_id=7)
    assert all(record["rejected"] == {} for record in rounds)
    assert set(rounds[1]["epsilon"]) == set(SITES.values())
    return nodes, registry, tmp_path / "state" / ATTACKER


@pytest.mark.parametrize("how", ["delete-ledger", "fresh-state-folder"])
def test_a_site_that_rolls_back_its_ledger_is_refused_by_name(
    how: str,
    after_one_run: tuple[dict[int, Node], Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: the attacker throws its spending away.
    nodes, registry, state = after_one_run
    if how == "delete-ledger":
        for name in ("privacy-ledger.jsonl", "privacy-ledger.head.json"):
            (state / name).unlink()
    else:
        nodes[1].node_config["state-dir"] = str(tmp_path / "fresh-state")

    # Execute
    with caplog.at_level(logging.WARNING):
        rounds = run(nodes, registry, tmp_path / "run-2", run_id=8)

    # Assert: every reply of the attacker is refused, naming it; the others go on.
    for record in rounds:
        assert "ledger went back" in record["rejected"][ATTACKER], record
        assert set(record["sites"]) == {"hungarian", "va"}
    assert set(rounds[1]["epsilon"]) == {"hungarian", "va"}
    assert any(ATTACKER in r.getMessage() and "ledger went back" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_a_declared_reset_is_accepted_audited_and_shown_to_the_coordinator(
    after_one_run: tuple[dict[int, Node], Path, Path],
    tmp_path: Path,
    site_paths: dict[str, Path],
    free_tcp_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: the site restarts with --reset-ledger (no coordinator listens: only the reset
    # matters here, and it happens before the daemon connects).
    nodes, registry, state = after_one_run
    started = CliRunner().invoke(
        app,
        [
            "site", "start", "--reset-ledger", "--name", ATTACKER,
            "--data", str(site_paths[ATTACKER]), "--state", str(state),
            "--key", nodes[1].node_config["site-key"], "--ca", str(ca_certificate(tmp_path)),
            "--coordinator", f"127.0.0.1:{free_tcp_port}", "--connect-timeout", "1",
        ],
    )  # fmt: skip
    assert started.exit_code != 0  # nothing to connect to here
    assert not SiteDaemon(state).daemon.alive()

    # Execute
    with caplog.at_level(logging.WARNING):
        rounds = run(nodes, registry, tmp_path / "run-2", run_id=8)

    # Assert: the old ledger is kept aside, the audit log says so, the coordinator accepts
    # the site and logs the declared reset.
    assert len(list(state.glob("privacy-ledger.reset-*.jsonl"))) == 1, started.output
    audit = [json.loads(line) for line in (state / "audit-log.jsonl").read_text().splitlines()]
    assert [e["resets"] for e in audit if e["kind"] == "ledger-reset"] == [1]
    for record in rounds:
        assert record["rejected"] == {}
        assert set(record["sites"]) == set(SITES.values())
    messages = [r.getMessage() for r in caplog.records]
    assert f"site {ATTACKER} declared a ledger reset (1)" in " ".join(messages), messages


def test_a_ledger_head_signed_with_another_key_is_refused(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: Cleveland's replies are signed with a key that is not the registered one.
    nodes, registry = registered_federation(tmp_path, SITES, site_paths)
    other, _ = site_keys(tmp_path / "other", ATTACKER)
    nodes[1].node_config["site-key"] = str(other)

    # Execute
    rounds = run(nodes, registry, tmp_path / "run", run_id=7)

    # Assert
    for record in rounds:
        assert "ledger head signature invalid" in record["rejected"][ATTACKER]
        assert set(record["sites"]) == {"hungarian", "va"}


@pytest.fixture
def free_tcp_port() -> int:
    from fedcare.processes import free_port

    return free_port()


def ca_certificate(folder: Path) -> Path:
    """A PEM CA certificate (the site daemon checks one before it connects)."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA384())
    )  # fmt: skip
    path = folder / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path
