"""The hospital's site daemon: Flower's SuperNode with the federation's CA, the site key and the
site's own configuration, started only after the site's data passes the data gate.

The data path, state folder and privacy policy travel to the ClientApp as SuperNode node config;
they never leave the site. Start-up waits until the SuperNode is authenticated with the
coordinator, or reports in one line why it is not (missing key, bad CA, unknown key, coordinator
unreachable).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, HEARTBEAT_PATIENCE

from fedcare.client.executor import settings as executor_settings
from fedcare.client.policy import SitePolicy
from fedcare.client.site import SiteIdentity
from fedcare.errors import ConfigError, FedcareError
from fedcare.processes import Daemon, flower_environment, free_port, private_dir
from fedcare.superexec import executor_argv, fedcare_fab_hash, write_secret
from fedcare.tasks import get_task

CONNECT_TIMEOUT_S = 60.0
# A site daemon that died without stopping (crash, power cut, SIGKILL) leaves its SuperNode
# marked online at the SuperLink until two missed heartbeats (Flower: 2 x 30 s), and Flower
# refuses to activate a node that is online. A restart after such a death retries for that long.
REJOIN_WAIT_S = HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL + 20.0
REJOIN_RETRY_S = 5.0
NOT_ACTIVATED = "failed to activate supernode"
logger = logging.getLogger(__name__)
_SAFE_VALUE = re.compile(r'^[^"\s=\\]+$')


class SiteError(FedcareError):
    """The site daemon could not start or connect."""


@dataclass(frozen=True)
class SiteDaemon:
    """One site's SuperNode process, keyed by its state folder."""

    state_dir: Path

    @property
    def daemon(self) -> Daemon:
        return Daemon(self.state_dir / "supernode.pid")

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / "supernode.log"

    @property
    def executor(self) -> Daemon:
        return Daemon(self.state_dir / "executor.pid")

    def start(
        self,
        name: str,
        data: Path,
        key: Path,
        ca: Path,
        coordinator: str,
        policy: SitePolicy,
        task: str = "heart-disease",
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        approved_apps: tuple[str, ...] = (),
    ) -> int:
        """Check key, CA and data, start the SuperNode, wait until it is authenticated."""
        if not key.is_file():
            raise ConfigError(
                f"{key}: site key not found; create it here with 'fedcare site keygen "
                f"--state {self.state_dir} --name {name}' and send site.pub to the model owner"
            )
        try:
            x509.load_pem_x509_certificate(ca.read_bytes())
        except (OSError, ValueError):
            raise ConfigError(
                f"{ca}: not a PEM CA certificate; copy the federation's ca.crt here"
            ) from None
        # the data gate: refuses before anything connects
        get_task(task).load_site(name, data, ignore_columns=policy.ignore_columns)
        if self.daemon.alive():
            raise SiteError(f"{self.state_dir}: site daemon already running")
        # a pid file whose process is gone: the last daemon died without 'site stop'
        crashed = self.daemon.record() is not None
        node_config = SiteIdentity(
            name, data, self.state_dir, policy, key_path=key.resolve()
        ).to_node_config()  # the key also signs every reply's ledger head
        for field, value in node_config.items():
            if isinstance(value, str) and not _SAFE_VALUE.match(value):
                raise ConfigError(
                    f"{field} {value!r}: paths and names may not contain spaces or quotes"
                )
        port = free_port()
        argv = [
            "flower-supernode",
            "--superlink", coordinator,
            "--root-certificates", str(ca.resolve()),
            "--auth-supernode-private-key", str(key.resolve()),
            "--node-config", " ".join(
                f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in node_config.items()
            ),
            "--port", str(port),
            "--isolation", "process",  # ClientApps run only through the site's executor
        ]  # fmt: skip
        private_dir(self.state_dir)  # ledger, audit log, logs: this user's only
        # Only the process holding this start's secret (the executor) is handed tasks.
        secret = write_secret(self.state_dir)
        argv += ["--superexec-auth-secret-file", str(secret.resolve())]
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        environment = flower_environment(self.state_dir / "flwr-home")
        approved = (fedcare_fab_hash(), *approved_apps)
        rejoin_until = time.monotonic() + REJOIN_WAIT_S
        while True:
            pid = self.daemon.start(argv, self.log_file, environment, port)
            try:
                self._wait_connected(coordinator, offset, connect_timeout_s)
                break
            except SiteError as exc:
                text = self.log_file.read_bytes()[offset:].decode(errors="replace").lower()
                if not crashed or NOT_ACTIVATED not in text or time.monotonic() > rejoin_until:
                    raise exc from None
                logger.warning(
                    "the coordinator still holds this site's previous session (the daemon did "
                    "not stop cleanly); retrying until it lapses (at most %.0f s)",
                    REJOIN_WAIT_S,
                )
                time.sleep(REJOIN_RETRY_S)
                offset = self.log_file.stat().st_size
        settings = executor_settings(f"127.0.0.1:{port}", secret, self.state_dir, approved)
        log = self.state_dir / "logs" / "executor.log"
        self.executor.start(
            executor_argv("fedcare.client.executor", settings), log, environment, port
        )
        return pid

    def _wait_connected(self, coordinator: str, offset: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            alive = self.daemon.alive()  # before reading, so a dead process' last words are read
            text = self.log_file.read_bytes()[offset:].decode(errors="replace")
            if "SuperNode ID" in text:
                return
            failure = _diagnose(text, coordinator)
            if not failure and not alive:
                failure = f"the site daemon exited during start-up; see {self.log_file}"
            if failure or time.monotonic() > deadline:
                self.daemon.stop(timeout=5)
                raise SiteError(failure or _unreachable(coordinator, timeout_s, self.log_file))
            time.sleep(0.3)

    def stop(self) -> None:
        self.executor.stop()
        self.daemon.stop()


def _unreachable(coordinator: str, timeout_s: float, log_file: Path) -> str:
    return (
        f"could not connect to the coordinator at {coordinator} within {timeout_s:.0f} s; check "
        f"the address and that the coordinator is running (log: {log_file})"
    )


def _diagnose(log: str, coordinator: str) -> str | None:
    if "CERTIFICATE_VERIFY_FAILED" in log or "certificate verify failed" in log:
        return (
            f"the coordinator at {coordinator} presented a certificate not signed by this CA "
            "(CERTIFICATE_VERIFY_FAILED); get the federation's ca.crt from the coordinator"
        )
    lowered = log.lower()
    refused = ("failed to activate supernode", "not registered", "unauthenticated")
    if any(marker in lowered for marker in refused):
        return (
            "the coordinator refused this site's key (not registered); ask the coordinator to "
            "register this site's site.pub ('fedcare pki add-site NAME --public-key site.pub')"
        )
    return None
