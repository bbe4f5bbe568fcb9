"""Stock Flower's default deployment on loopback: the reference of ``fedcare bench latency``.

Started with Flower's own commands and Flower's defaults, none of fedcare's deployment code::

    flower-superlink  TLS (a server certificate from a CA) + --enable-supernode-auth; default
                      isolation (``subprocess``: its own ``flower-superexec`` launches
                      ``flwr-serverapp``), in-memory state, runtime dependency installation on
    flwr supernode register SITE.pub    one auth key pair per SuperNode, registered as Flower does
    flower-supernode  x3, --root-certificates + --auth-supernode-private-key; default isolation
                      (``subprocess``: its own ``flower-superexec`` launches ``flwr-clientapp``)
    flwr run APP stock                  a connection in this deployment's own FLWR_HOME

No front door, no fedcare executor, no ``--isolation process``, no SuperExec secret. The only
departures from a stock install, both forced by three SuperNodes sharing one host: each SuperNode
gets a free port for its local runtime API (the default 9094 would collide) and its own
``FLWR_HOME``. The CA, certificate and key pairs come from fedcare's PKI functions
(:mod:`fedcare.privacy.pki`): standard X.509 and OpenSSH EC keys, what ``openssl`` and
``ssh-keygen`` would make. Processes are started in sessions of their own and always stopped by
pid (:class:`fedcare.processes.Daemon`), helpers included.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.errors import FedcareError
from fedcare.privacy.pki import (
    CA_CERT,
    SERVER_CERT,
    SERVER_KEY,
    generate_site_key,
    init_federation,
)
from fedcare.processes import Daemon, _processes, flower_environment, free_port

CONNECTION = "stock"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0


class StockDeploymentError(FedcareError):
    """Stock Flower's deployment did not start or its run did not finish."""


@dataclass(frozen=True)
class StockDeployment:
    """A running stock SuperLink and its SuperNodes, all under ``root``."""

    root: Path
    superlink: Daemon
    supernodes: tuple[Daemon, ...]

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    def supernode_argv(self) -> list[list[str]]:
        """Each SuperNode's command line, as started."""
        return [list(map(str, _argv(daemon))) for daemon in self.supernodes]

    def supernode_group_commands(self) -> list[list[str]]:
        """Per SuperNode, the command lines living in its process group now: with Flower's
        default isolation, the SuperNode and the ``flower-superexec`` it launched itself."""
        groups = []
        for daemon in self.supernodes:
            record = daemon.record()
            pgid = record.pgid if record else -1
            groups.append(sorted(cmd for _, group, cmd in _processes() if group == pgid))
        return groups

    def run(self, app: Path, timeout_s: float = 120.0) -> str:
        """``flwr run APP stock``; returns the run id."""
        result = self._flwr("run", str(app), CONNECTION, "--format", "json", timeout_s=timeout_s)
        run_id = _json(result).get("run-id")
        if run_id is None:
            raise StockDeploymentError(f"'flwr run' failed: {_said(result)}")
        return str(run_id)

    def run_status(self, run_id: str) -> str:
        """Flower's status of the run (e.g. ``running``, ``finished:completed``)."""
        result = self._flwr("ls", CONNECTION, "--format", "json")
        for run in _json(result).get("runs", []):
            if str(run.get("run-id")) == run_id:
                return str(run.get("status", ""))
        return "unknown"

    def _flwr(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        environment = flower_environment(self.flwr_home) | {"COLUMNS": "1000"}
        return subprocess.run(
            ["flwr", *args], env=environment, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )  # fmt: skip


@contextmanager
def stock_deployment(root: Path, sites: tuple[str, ...]) -> Iterator[StockDeployment]:
    """Start stock Flower's default deployment with one SuperNode per site; stop it on exit."""
    pki = root / "pki"
    init_federation(pki, [HOST, "localhost"])
    keys = {site: generate_site_key(root / "nodes" / site, site) for site in sites}
    superlink = Daemon(root / "superlink.pid")
    supernodes = tuple(Daemon(root / "nodes" / site / "supernode.pid") for site in sites)
    deployment = StockDeployment(root, superlink, supernodes)
    port = free_port(HOST)
    _write_connection(deployment.flwr_home, f"{HOST}:{port}", pki / CA_CERT)
    try:
        argv = [
            "flower-superlink",
            "--ssl-ca-certfile", str(pki / CA_CERT),
            "--ssl-certfile", str(pki / SERVER_CERT),
            "--ssl-keyfile", str(pki / SERVER_KEY),
            "--enable-supernode-auth",
            "--host", HOST, "--port", str(port),
        ]  # fmt: skip
        log = root / "logs" / "superlink.log"
        superlink.start(argv, log, flower_environment(deployment.flwr_home), port)
        _wait_listening(superlink, port, log)
        for site in sites:  # registered before they connect, as authentication requires
            result = deployment._flwr(
                "supernode", "register", str(keys[site].public_key), CONNECTION,
                "--name", site, "--format", "json",
            )  # fmt: skip
            if not _json(result).get("node-id"):
                raise StockDeploymentError(f"registering {site} failed: {_said(result)}")
        offsets = []
        for site, daemon in zip(sites, supernodes, strict=True):
            node_port = free_port(HOST)
            argv = [
                "flower-supernode",
                "--superlink", f"{HOST}:{port}",
                "--root-certificates", str(pki / CA_CERT),
                "--auth-supernode-private-key", str(keys[site].private_key),
                "--port", str(node_port),  # the local runtime API; 9094 for all would collide
            ]  # fmt: skip
            node_log = _log(daemon)
            offsets.append(node_log.stat().st_size if node_log.exists() else 0)
            environment = flower_environment(root / "nodes" / site / "flwr-home")
            daemon.start(argv, node_log, environment, node_port)
        for daemon, offset in zip(supernodes, offsets, strict=True):
            _wait_connected(daemon, offset)
        yield deployment
    finally:
        for daemon in supernodes:
            daemon.stop()
        superlink.stop()


def _write_connection(flwr_home: Path, address: str, ca: Path) -> None:
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{address}"\nroot-certificates = "{ca.resolve()}"\n',
        encoding="utf-8",
    )


def _log(daemon: Daemon) -> Path:
    return daemon.pid_file.parent / "logs" / "supernode.log"


def _argv(daemon: Daemon) -> list[Any]:
    info = daemon.info() or {}
    argv = info.get("argv", [])
    return list(argv) if isinstance(argv, list) else []


def _wait_listening(daemon: Daemon, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            pass
        if not daemon.alive() or time.monotonic() > deadline:
            raise StockDeploymentError(f"flower-superlink did not start on {port}; see {log}")
        time.sleep(0.3)


def _wait_connected(daemon: Daemon, offset: int) -> None:
    """Until the SuperNode logs its node id (authenticated by the SuperLink)."""
    log = _log(daemon)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        alive = daemon.alive()  # before reading, so a dead process' last words are read
        if "SuperNode ID" in log.read_bytes()[offset:].decode(errors="replace"):
            return
        if not alive or time.monotonic() > deadline:
            raise StockDeploymentError(f"flower-supernode did not connect; see {log}")
        time.sleep(0.3)


def _said(result: subprocess.CompletedProcess[str]) -> str:
    """The end of what a failed Flower CLI command printed, both streams."""
    return (result.stdout + result.stderr)[-2000:]


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
