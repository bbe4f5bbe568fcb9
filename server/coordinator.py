"""The coordinator operator's launcher: Flower's SuperLink with TLS and site authentication,
site registration, run submission and progress.

Everything lives in one folder (the PKI folder from ``fedcare pki init``)::

    ca.crt coordinator.crt coordinator.key sites.json sites/NAME/site.pub   PKI
    flwr-home/config.toml                      the Flower CLI's connection "fedcare" (loopback)
    superlink.pid superlink.db logs/superlink.log     Flower's SuperLink, on loopback only
    frontdoor.pid logs/frontdoor.log           the Fleet-API-only front door the sites reach
    runs/RUN/{app/pyproject.toml, rounds.json, global_model.safetensors}
"""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.atomic import write_bytes_atomic, write_json_atomic
from fedcare.config import RunConfig
from fedcare.errors import ConfigError, FedcareError
from fedcare.flower_app import write_flower_app
from fedcare.privacy.pki import CA_CERT, CA_KEY, REGISTRY, SERVER_CERT, SERVER_KEY, read_registry
from fedcare.processes import Daemon, flower_environment, free_port, private_dir
from fedcare.runtime_keys import (
    MIN_SITES_KEY,
    OUT_DIR_KEY,
    REGISTRY_KEY,
    RESUME_KEY,
    ROUNDS_FILE,
    default_runtime_config,
)
from fedcare.server.executor import settings as executor_settings
from fedcare.superexec import executor_argv, fedcare_fab_hash, write_secret

logger = logging.getLogger(__name__)
CONNECTION = "fedcare"
LOOPBACK = "127.0.0.1"  # the SuperLink's own port never faces the network
START_TIMEOUT_S = 60.0
STATUS_EVERY_S = 5.0
RUN_FILE = "run.json"
SUBMITTED_FILE = "submitted.json"  # the run's settings as submitted (run-config overrides)


class CoordinatorError(FedcareError):
    """The coordinator could not start, register a site or run."""


@dataclass(frozen=True)
class Coordinator:
    """Paths and processes of one coordinator folder."""

    root: Path

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    @property
    def daemon(self) -> Daemon:
        return Daemon(self.root / "superlink.pid")

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "superlink.log"

    @property
    def front_door(self) -> Daemon:
        return Daemon(self.root / "frontdoor.pid")

    @property
    def front_door_log(self) -> Path:
        return self.root / "logs" / "frontdoor.log"

    def address(self) -> str:
        """The address sites connect to: the front door (never the SuperLink itself)."""
        info = self.front_door.info()
        if info is None or not self.front_door.alive() or not self.daemon.alive():
            raise CoordinatorError(f"{self.root}: coordinator is not running; start it first")
        return f"{info.get('host', '127.0.0.1')}:{info['port']}"

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the Flower CLI against this coordinator's SuperLink (wide, so that the boxes of
        its error messages do not wrap words apart)."""
        environment = flower_environment(self.flwr_home) | {"COLUMNS": "1000"}
        try:
            return subprocess.run(
                ["flwr", *args], env=environment, capture_output=True, text=True,
                timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise CoordinatorError(
                f"'flwr {args[0]}' did not answer in {timeout:.0f} s; see {self.log_file}"
            ) from None

    @property
    def executor(self) -> Daemon:
        return Daemon(self.root / "executor.pid")

    def start(
        self, host: str = "127.0.0.1", port: int | None = None, approved_apps: tuple[str, ...] = ()
    ) -> str:
        """Start the SuperLink (TLS + SuperNode authentication) on loopback, the front door on
        ``host:port`` (the only listener sites can reach), and register every site."""
        for name in (CA_CERT, SERVER_CERT, SERVER_KEY):
            if not (self.root / name).is_file():
                raise ConfigError(
                    f"{self.root / name}: missing; run 'fedcare pki init --dir {self.root}'"
                )
        private_dir(self.root)  # keys, superlink.db, logs, runs: readable by this user only
        if (self.root / CA_KEY).exists():  # never needed here: it signs only at 'pki init'
            logger.warning(
                "warning: %s: the CA private key sits beside the coordinator; move it offline",
                self.root / CA_KEY,
            )
        if self.daemon.alive():
            raise CoordinatorError(f"{self.root}: coordinator already running at {self.address()}")
        port = port or free_port(host)
        internal = free_port(LOOPBACK)
        self._write_connection(LOOPBACK, internal)
        secret = write_secret(self.root)  # fresh each start; the SuperLink's and executor's
        argv = superlink_argv(self.root, internal, secret)
        environment = flower_environment(self.flwr_home)
        self.daemon.start(argv, self.log_file, environment, internal, LOOPBACK)
        try:  # from here on, a failure stops everything this start began: nothing half-started
            self._start_helpers(host, port, internal, secret, approved_apps, environment)
            self.register_sites()
        except CoordinatorError as exc:
            self.stop()
            raise CoordinatorError(
                f"{exc}; the coordinator was stopped (nothing left running): fix this, then "
                f"'fedcare coordinator start --dir {self.root}' again"
            ) from None
        except BaseException:
            self.stop()
            raise
        return f"{host}:{port}"

    def _start_helpers(
        self,
        host: str,
        port: int,
        internal: int,
        secret: Path,
        approved_apps: tuple[str, ...],
        environment: dict[str, str],
    ) -> None:
        """Once the SuperLink runs: the executor, and the front door on ``host:port``."""
        self._wait_listening(self.daemon, LOOPBACK, internal, "SuperLink", self.log_file)
        settings = executor_settings(
            f"{LOOPBACK}:{internal}", secret, self.root, (fedcare_fab_hash(), *approved_apps),
            self.root / CA_CERT,
        )  # fmt: skip
        log = self.root / "logs" / "executor.log"
        argv = executor_argv("fedcare.server.executor", settings)
        self.executor.start(argv, log, environment, internal, LOOPBACK)
        front_door = [
            sys.executable, "-m", "fedcare.server.frontdoor", "--host", host, "--port", str(port),
            "--upstream", f"{LOOPBACK}:{internal}", "--ca", str(self.root / CA_CERT),
            "--certfile", str(self.root / SERVER_CERT), "--keyfile", str(self.root / SERVER_KEY),
        ]  # fmt: skip
        self.front_door.start(front_door, self.front_door_log, environment, port, host)
        self._wait_listening(self.front_door, host, port, "front door", self.front_door_log)

    def _wait_listening(self, daemon: Daemon, host: str, port: int, what: str, log: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepts(host, port):
            if not daemon.alive() or time.monotonic() > deadline:
                raise CoordinatorError(f"the {what} did not start on {host}:{port}; see {log}")
            time.sleep(0.3)

    def _write_connection(self, host: str, port: int) -> None:
        text = (
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{host}:{port}"\nroot-certificates = "{(self.root / CA_CERT).resolve()}"\n'
        )
        write_bytes_atomic(self.flwr_home / "config.toml", text.encode())

    def register_sites(self) -> dict[str, str]:
        """Register every site of ``sites.json`` not yet known to this SuperLink."""
        registry = read_registry(self.root)
        for name, entry in registry.items():
            if entry.get("node_id"):
                continue
            result = self.flwr(
                "supernode", "register", entry["public_key"], CONNECTION, "--name", name,
                "--format", "json",
            )  # fmt: skip
            node_id = _json_output(result).get("node-id")
            if result.returncode != 0 or not node_id:
                raise CoordinatorError(
                    f"registering site {name!r} failed: {flower_error(result)}; check its key "
                    f"{entry['public_key']} or register it again with 'fedcare pki add-site "
                    f"{name} --dir {self.root} --public-key SITE.pub --force'"
                )
            entry["node_id"] = str(node_id)
            write_json_atomic(self.root / REGISTRY, registry)
        return {name: e["node_id"] for name, e in registry.items()}

    def status(self) -> dict[str, Any]:
        """Which registered sites are online, and the latest run's progress."""
        address = self.address()  # not running: say so at once, without asking Flower
        result = self.flwr("supernode", "list", CONNECTION, "--format", "json")
        listed = _json_output(result)
        if listed.get("success") is False:
            raise CoordinatorError(f"listing the sites failed: {flower_error(result)}")
        nodes = listed.get("nodes", [])
        names = {e.get("node_id"): n for n, e in read_registry(self.root).items()}
        sites = {names.get(str(n["node-id"]), str(n["node-id"])): n["status"] for n in nodes}
        latest = self.latest_run()
        rounds = (
            json.loads((latest / ROUNDS_FILE).read_text())
            if latest and (latest / ROUNDS_FILE).exists()
            else []
        )
        return {
            "address": address,
            "sites": sites,
            "run": latest.name if latest else None,
            "round": rounds[-1]["round"] if rounds else None,
        }

    def latest_run(self) -> Path | None:
        runs = sorted((self.root / "runs").glob("*/app")) if (self.root / "runs").exists() else []
        return runs[-1].parent if runs else None

    def submit(
        self, config: RunConfig, min_sites: int, runtime: dict[str, Any] | None = None
    ) -> Path:
        """Submit a fedcare run (the same ServerApp as simulation); returns its run folder.

        ``runtime``: further runtime keys (:mod:`fedcare.runtime_keys`), e.g. validate mode."""
        out = self.new_run_folder()
        # The FAB holds defaults only, so its hash is the same for every run of this fedcare
        # version (sites approve it); this run's settings travel as run-config overrides.
        defaults = RunConfig().to_run_config() | default_runtime_config()
        app = write_flower_app(out / "app", defaults)
        overrides = (
            config.to_run_config()
            | {
                OUT_DIR_KEY: str(out.resolve()),
                MIN_SITES_KEY: min_sites,
                REGISTRY_KEY: str((self.root / REGISTRY).resolve()),  # names replies by node id
            }
            | dict(runtime or {})
        )
        write_json_atomic(out / SUBMITTED_FILE, overrides)  # what --resume submits again
        return self.submit_app(app, overrides)

    def resume(self, out: Path, runtime: dict[str, Any] | None = None) -> Path:
        """Submit the run in ``out`` again, as a new Flower run that continues from its last
        complete checkpoint (:mod:`fedcare.server.checkpoint`); same app, same settings."""
        submitted = out / SUBMITTED_FILE
        if not (out / "app").is_dir() or not submitted.is_file():
            raise CoordinatorError(
                f"{out}: not a run folder of this coordinator ({SUBMITTED_FILE} or app/ missing);"
                f" give a folder under {self.root / 'runs'}"
            )
        overrides = json.loads(submitted.read_text(encoding="utf-8"))
        overrides |= dict(runtime or {}) | {RESUME_KEY: 1}
        return self.submit_app(out / "app", overrides)

    def new_run_folder(self) -> Path:
        """A fresh folder under ``runs/`` for the next run's app and results."""
        out = self.root / "runs" / time.strftime("%Y%m%d-%H%M%S")
        suffix = 1
        while out.exists():
            out = out.with_name(f"{out.name.split('.')[0]}.{suffix}")
            suffix += 1
        out.mkdir(parents=True)
        return out

    def submit_app(self, app: Path, overrides: dict[str, Any] | None = None) -> Path:
        """Submit the Flower App folder ``app`` with ``flwr run``; returns its run folder."""
        self.address()
        out = app.parent
        args = ["run", str(app), CONNECTION, "--format", "json"]
        if overrides:
            args += ["--run-config", " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())]
        result = self.flwr(*args)
        run_id = _json_output(result).get("run-id")
        if run_id is None:
            raise CoordinatorError(f"submitting the run failed: {flower_error(result)}")
        write_json_atomic(out / RUN_FILE, {"run_id": str(run_id)})
        return out

    def run_status(self, out: Path) -> tuple[str, str]:
        """Flower's status of the run in ``out`` (e.g. ``running``, ``finished:failed``)."""
        run_id = json.loads((out / RUN_FILE).read_text())["run_id"]
        result = self.flwr("ls", CONNECTION, "--format", "json")
        runs = _json_output(result).get("runs", []) if result.returncode == 0 else []
        for run in runs:
            if str(run.get("run-id")) == run_id:
                return str(run.get("status", "")), str(run.get("status-details", ""))
        return "unknown", ""

    def follow(
        self, out: Path, rounds: int, on_round: Callable[[dict[str, Any]], None], timeout_s: float
    ) -> list[dict[str, Any]]:
        """Wait for the run's rounds (0..rounds), reporting each once; fail fast if the run
        ends early (a ServerApp error) or ``timeout_s`` passes."""
        seen = 0
        deadline = time.monotonic() + timeout_s
        next_status_check = time.monotonic() + STATUS_EVERY_S
        records: list[dict[str, Any]] = []
        while seen < rounds + 1:
            if time.monotonic() > deadline:
                raise CoordinatorError(
                    f"run {out.name} reached round {seen - 1} of {rounds} in {timeout_s:.0f} s"
                )
            path = out / ROUNDS_FILE
            records = json.loads(path.read_text()) if path.exists() else []
            for record in records[seen:]:
                on_round(record)
            seen = len(records)
            if seen < rounds + 1 and time.monotonic() > next_status_check:
                next_status_check = time.monotonic() + STATUS_EVERY_S
                status, details = self.run_status(out)
                final = json.loads(path.read_text()) if path.exists() else []
                if status.startswith("finished") and len(final) < rounds + 1:
                    raise CoordinatorError(
                        f"run {out.name} ended as {status} ({details}) after round {seen - 1}; "
                        f"see 'flwr log' or {self.log_file}"
                    )
            time.sleep(0.5)
        return records

    def wait_for(self, out: Path, name: str, timeout_s: float) -> Path:
        """Wait until the run in ``out`` writes ``name``; fail fast if the run ends without it."""
        deadline = time.monotonic() + timeout_s
        next_status_check = time.monotonic() + STATUS_EVERY_S
        while not (out / name).exists():
            if time.monotonic() > deadline:
                raise CoordinatorError(f"run {out.name} wrote no {name} in {timeout_s:.0f} s")
            if time.monotonic() > next_status_check:
                next_status_check = time.monotonic() + STATUS_EVERY_S
                status, details = self.run_status(out)
                if status.startswith("finished") and not (out / name).exists():
                    raise CoordinatorError(
                        f"run {out.name} ended as {status} ({details}) without {name}; "
                        f"see 'flwr log' or {self.log_file}"
                    )
            time.sleep(0.5)
        return out / name

    def stop(self) -> None:
        """Stop the front door, the SuperLink and its helper processes."""
        self.front_door.stop()
        self.executor.stop()
        self.daemon.stop()


def superlink_argv(root: Path, port: int, secret: Path) -> list[str]:
    """The SuperLink's command line: TLS, SuperNode authentication, loopback ``port`` only, and
    ServerApps run only through the coordinator's executor, which holds ``secret``."""
    return [
        "flower-superlink",
        "--ssl-ca-certfile", str(root / CA_CERT),
        "--ssl-certfile", str(root / SERVER_CERT),
        "--ssl-keyfile", str(root / SERVER_KEY),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--host", LOOPBACK, "--port", str(port),
        "--database", str(root / "superlink.db"),
        # ServerApps run only through this coordinator's executor, which holds the secret.
        "--isolation", "process", "--superexec-auth-secret-file", str(secret.resolve()),
    ]  # fmt: skip


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _json_output(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """What a Flower CLI command printed with ``--format json``; {} if it printed no object."""
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


_BOX = " │╭╮╰╯─┃━┏┓┗┛"
_PUNCTUATION_ONLY = re.compile(r"^[\s{}\[\],:\"]*$")


def flower_error(result: subprocess.CompletedProcess[str]) -> str:
    """What a failed Flower CLI command said, in words on one line.

    With ``--format json`` Flower prints ``{"success": false, "error-message": "..."}`` (and
    exits 0); errors it raises before that come as its exit report (``Exit Code: 500``, the
    reason, a short help, a link) or as an ``Error`` box (a file it cannot read, a bad option)
    on stderr. Each becomes its text; else the last line with words in it.
    """
    output = _ANSI.sub("", result.stderr + "\n" + result.stdout)
    message = _json_output(result).get("error-message")
    if not (isinstance(message, str) and message.strip()):
        message = _exit_report(output) or _boxed_error(output)
    if not message:
        lines = [line.strip(_BOX) for line in output.splitlines()]
        words = [line for line in lines if not _PUNCTUATION_ONLY.match(line)]
        message = words[-1] if words else ""
    message = " ".join(message.split()).rstrip(". ")
    return message or f"Flower's CLI gave no reason (exit code {result.returncode})"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _exit_report(text: str) -> str:
    """The reason and short help of Flower's exit report (``flwr_exit``), without its link."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.search(r"Exit Code: \d+", line):
            said = []
            for following in lines[index + 1 :]:
                if following.startswith("For more information, visit"):
                    break
                if following.strip():
                    said.append(following.strip().rstrip("."))
            return ": ".join(said)
    return ""


def _boxed_error(text: str) -> str:
    """The text inside the ``╭─ Error ─╮ ... ╰─╯`` box Flower's CLI (click/rich) draws."""
    inside, found = False, []
    for line in text.splitlines():
        if line.lstrip().startswith("╭") and "Error" in line:
            inside = True
        elif inside and line.lstrip().startswith("╰"):
            break
        elif inside:
            found.append(line.strip(_BOX))
    return " ".join(part for part in found if part)
