"""Finding 1 of the trust hardening: a site's copy of ``ca.crt`` must not open the coordinator.

The attacker is an honest-but-curious hospital holding only what every site holds: the
federation's ``ca.crt`` and the address sites connect to. With a fresh ``FLWR_HOME`` whose config
names that address and ``root-certificates = ca.crt`` (nothing else), Flower's own CLI tries
``flwr ls``, ``flwr supernode list``, ``flwr supernode register KEY`` and ``flwr run ./app`` with
a ServerApp of its own that would leave a marker file on the coordinator host. Before the front
door, all of them were answered by the SuperLink (Control API authentication is a Flower
Enterprise feature). Now the SuperLink listens on loopback only, and the front door the sites
reach forwards Fleet API routes only.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES

pytestmark = pytest.mark.slow
FEDCARE = [sys.executable, "-m", "fedcare"]
FLWR = str(Path(sys.executable).parent / "flwr")
FLEET_PATHS = {path for _, path in PROTOBUF_REQUEST_TYPES if path.startswith("/v1/fleet/")}


def fedcare(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run([*FEDCARE, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    coord = tmp_path_factory.mktemp("frontdoor") / "coordinator"
    assert fedcare("pki", "init", "--dir", str(coord)).returncode == 0
    started = fedcare("coordinator", "start", "--dir", str(coord))
    try:
        assert started.returncode == 0, started.stderr
        address = started.stdout.split("listening on ")[1].split()[0]
        yield {"coord": coord, "address": address}
    finally:
        fedcare("coordinator", "stop", "--dir", str(coord))


def attacker(tmp_path: Path, coordinator: dict[str, Any]) -> dict[str, str]:
    """A fresh Flower CLI home that holds nothing but the federation's CA and its address."""
    home = tmp_path / "attacker-home"
    home.mkdir()
    ca = home / "ca.crt"
    ca.write_bytes((coordinator["coord"] / "ca.crt").read_bytes())
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "target"\n\n[superlink.target]\n'
        f'address = "{coordinator["address"]}"\nroot-certificates = "{ca}"\n'
    )
    return os.environ | {"FLWR_HOME": str(home), "COLUMNS": "200"}


def flwr(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [FLWR, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )
    return result.stdout + result.stderr


def operator_view(coordinator: dict[str, Any], *args: str) -> dict[str, Any]:
    """What the operator sees on the coordinator host (the CLI's loopback connection)."""
    from fedcare.server.coordinator import Coordinator

    result = Coordinator(coordinator["coord"]).flwr(*args, "fedcare", "--format", "json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_a_site_ca_copy_cannot_list_runs_or_sites(
    coordinator: dict[str, Any], tmp_path: Path
) -> None:
    env = attacker(tmp_path, coordinator)

    listed_runs = flwr(env, "ls")
    listed_nodes = flwr(env, "supernode", "list")

    assert "403 Forbidden" in listed_runs and "/v1/control/list-runs" in listed_runs
    assert "403 Forbidden" in listed_nodes


def test_a_site_ca_copy_cannot_register_a_supernode(
    coordinator: dict[str, Any], tmp_path: Path
) -> None:
    env = attacker(tmp_path, coordinator)
    rogue = ec.generate_private_key(ec.SECP384R1()).public_key()
    key = tmp_path / "rogue.pub"
    key.write_bytes(
        rogue.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )

    answer = flwr(env, "supernode", "register", str(key))

    assert "403 Forbidden" in answer
    assert "registered" not in answer.replace("403", "")
    assert operator_view(coordinator, "supernode", "list").get("nodes", []) == []


def test_a_site_ca_copy_cannot_run_code_on_the_coordinator(
    coordinator: dict[str, Any], tmp_path: Path
) -> None:
    env = attacker(tmp_path, coordinator)
    marker = tmp_path / "the-coordinator-ran-my-code"
    secret = coordinator["coord"] / "coordinator.key"
    app = tmp_path / "rogue_app"
    app.mkdir()
    (app / "rogue_server.py").write_text(
        "from pathlib import Path\nfrom flwr.serverapp import ServerApp\n"
        "app = ServerApp()\n\n@app.main()\ndef main(grid, context):\n"
        f"    Path({str(marker)!r}).write_text(open({str(secret)!r}).read())\n"
    )
    (app / "pyproject.toml").write_text(
        '[project]\nname = "rogue"\nversion = "1.0.0"\n\n[tool.flwr.app]\npublisher = "rogue"\n\n'
        '[tool.flwr.app.components]\nserverapp = "rogue_server:app"\n'
        'clientapp = "rogue_server:app"\n\n[tool.flwr.app.config]\n'
    )

    answer = flwr(env, "run", str(app), "target", cwd=tmp_path)

    assert "403 Forbidden" in answer
    assert operator_view(coordinator, "ls").get("runs", []) == []
    assert not marker.exists()


def _tls_client(coordinator: dict[str, Any]) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(coordinator["coord"] / "ca.crt"))
    return httpx.Client(base_url=f"https://{coordinator['address']}", verify=context, timeout=30)


def test_only_fleet_routes_pass_the_front_door(coordinator: dict[str, Any]) -> None:
    """Every Control and Runtime route Flower defines is refused at the door; every Fleet route
    reaches the SuperLink (which answers it on its own terms: here, no node authentication)."""
    other = sorted({(m, p) for m, p in PROTOBUF_REQUEST_TYPES if p not in FLEET_PATHS})
    assert any(p.startswith("/v1/control/") for _, p in other)
    with _tls_client(coordinator) as client:
        for method, path in other:
            assert client.request(method, path, content=b"").status_code == 403, path
        for tricky in (
            "/v1/fleet/../control/list-runs",
            "/v1/fleet/get-run/../../control/x",
            "/v1/fleet%2F..%2Fcontrol%2Flist-runs",
            "/v1/control/list-runs?x=/v1/fleet/",
        ):
            assert client.post(tricky, content=b"").status_code == 403, tricky
        assert client.get("/v1/fleet/get-run").status_code == 403  # Fleet is POST only
        for path in sorted(FLEET_PATHS):
            assert client.post(path, content=b"").status_code != 403, path
        assert client.get("/health").status_code == 200


def test_the_superlink_itself_listens_on_loopback_only(coordinator: dict[str, Any]) -> None:
    info = json.loads((coordinator["coord"] / "superlink.pid").read_text())
    port = int(info["port"])

    listening = _listening_addresses(port)

    assert listening and listening <= {"127.0.0.1"}, listening
    assert port != int(coordinator["address"].rsplit(":", 1)[1])  # sites reach the door only


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of TCP sockets in LISTEN state on ``port`` (from /proc/net/tcp[6])."""
    found: set[str] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            if family == socket.AF_INET:
                found.add(socket.inet_ntop(family, raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(family, words))
    return found
