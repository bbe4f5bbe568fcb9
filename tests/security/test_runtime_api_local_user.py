"""Finding 3 of the trust-hardening issue: a local process on either host gets no task.

The attacker is another local user (``nobody``) on the site host and on the coordinator host
(here one machine), holding no site or coordinator file. During a real run it polls the site's
and the coordinator's Runtime API for tasks (``AcquireTask``), reads every process' command
line in ``/proc`` for task tokens, tries to read any token file it sees named there, and pushes
replies with guessed, empty and (if it found one) sniffed tokens. Before the fix it won tasks
(no SuperExec secret) and read tokens from ``flwr-clientapp --token ...``. Now both hosts run
``--isolation process`` with a per-start secret that only their own executor holds, and apps
get their token through ``--token-file`` (0600 in a 0700 folder) or, at the site, over the
socket of a prestarted ClientApp worker (0600 in a 0700 folder). The attacker finds the
worker template's fork socket on its command line (``--control``) and worker sockets in
``/proc/net/unix`` (where a deep folder's socket shows as its ``/proc/self/fd`` alias), and
tries to connect and hand a task of its own.

The attacker runs Flower's own Runtime API client from the project's site-packages under the
system interpreter (the project's interpreter lives in root's home, which ``nobody`` cannot
enter); it writes one JSON line per finding to stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flwr
import pytest

from fedcare.client.executor import WORKER_MODULE

pytestmark = pytest.mark.slow
FEDCARE = [sys.executable, "-m", "fedcare"]
SITE = "cleveland"
TOKEN = re.compile(r"^[0-9a-f]{256}$")  # Flower's task token: 128 random bytes, hex
SYSTEM_PYTHON = "/usr/bin/python3"

ATTACKER = r"""
import json, os, re, secrets, socket, sys, time
import httpx
from flwr.proto.runtime_pb2 import AcquireTaskRequest, PullTaskInputRequest, PushAppMessagesRequest
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
from flwr.supercore.runtime import RuntimeHttpClient

site, coordinator, stop = sys.argv[1], sys.argv[2], sys.argv[3]
TOKEN = re.compile(r"^[0-9a-f]{256}$")
seen_files, sniffed, socket_paths = set(), set(), set()


def say(**finding):
    print(json.dumps(finding), flush=True)


def client(address, tls, token=None):
    interceptors = [RuntimeTokenHttpInterceptor(token)] if token is not None else []
    scheme = "https" if tls else "http"
    return RuntimeHttpClient(f"{scheme}://{address}", verify=False, interceptors=interceptors)


def attempt(host, call):
    try:
        call()
        return "accepted"
    except httpx.HTTPStatusError as exc:
        return f"refused {exc.response.status_code}"
    except Exception as exc:
        return f"error {type(exc).__name__}"


def acquire(host, address, tls, task_type):
    reply = None
    def call():
        nonlocal reply
        request = AcquireTaskRequest(supported_task_types=[task_type])
        reply = client(address, tls).AcquireTask(request)
    outcome = attempt(host, call)
    if reply is not None and reply.HasField("task") and reply.token:
        outcome = "won"
        sniffed.add((host, address, tls, reply.token))
    say(kind="acquire", host=host, outcome=outcome)


def scan():
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                args = handle.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        for i, arg in enumerate(args):
            if arg == "--token" or TOKEN.match(arg):
                say(kind="token-on-cmdline", cmdline=" ".join(args)[:300])
                if i + 1 < len(args) and TOKEN.match(args[i + 1]):
                    sniffed.add(("site", site, False, args[i + 1]))
                    sniffed.add(("coordinator", coordinator, True, args[i + 1]))
            if arg == "--control" and i + 1 < len(args):  # a worker template's fork socket
                socket_paths.add(args[i + 1])
            if arg == "--token-file" and i + 1 < len(args) and args[i + 1] not in seen_files:
                seen_files.add(args[i + 1])
                try:
                    with open(args[i + 1]) as handle:
                        token = handle.read().strip()
                    say(kind="token-file-read", path=args[i + 1])
                    sniffed.add(("site", site, False, token))
                except OSError as exc:
                    say(kind="token-file-unreadable", error=type(exc).__name__)


def scan_sockets():
    with open("/proc/net/unix") as handle:
        rows = [line.split() for line in handle.read().splitlines()[1:]]
    listed = {row[-1] for row in rows if len(row) > 7 and "prestarted" in row[-1]}
    for path in (listed | socket_paths) - seen_files:
        seen_files.add(path)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            task = {"token": secrets.token_hex(128), "runtime_api_address": site}
            task |= {"insecure": True, "root_certificates_path": None}
            probe.sendall(json.dumps(task).encode() + b"\n")
            say(kind="worker-socket-connected", path=path)
        except OSError as exc:
            say(kind="worker-socket-refused", error=type(exc).__name__)
        finally:
            probe.close()


def push(host, address, tls, token, how):
    request = PushAppMessagesRequest()
    outcome = attempt(host, lambda: client(address, tls, token).PushMessages(request))
    say(kind="push", host=host, how=how, outcome=outcome)


deadline = time.monotonic() + 900
pushed = False
while not os.path.exists(stop) and time.monotonic() < deadline:
    acquire("site", site, False, "flwr-clientapp")
    acquire("coordinator", coordinator, True, "flwr-serverapp")
    for _ in range(10):
        scan()
        time.sleep(0.02)
    scan_sockets()
    if not pushed:
        pushed = True
        push("site", site, False, secrets.token_hex(128), "guessed")
        push("site", site, False, None, "none")
        push("coordinator", coordinator, True, secrets.token_hex(128), "guessed")
    for host, address, tls, token in list(sniffed):
        request = PullTaskInputRequest()
        outcome = attempt(host, lambda: client(address, tls, token).PullTaskInput(request))
        say(kind="stolen-input", host=host, outcome=outcome)
        sniffed.discard((host, address, tls, token))
say(kind="done")
"""


def fedcare(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run(
        [*FEDCARE, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def port_of(pid_file: Path) -> int:
    return int(json.loads(pid_file.read_text())["port"])


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, site_paths: dict[str, Path]
) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("local-user")
    coord, state = root / "coordinator", root / SITE
    try:
        assert fedcare("pki", "init", "--dir", str(coord)).returncode == 0
        if fedcare("site", "keygen", "--help").returncode == 0:  # keys made at the site
            assert fedcare("site", "keygen", "--state", str(state), "--name", SITE).returncode == 0
            add = ("pki", "add-site", SITE, "--dir", str(coord), "--public-key")
            assert fedcare(*add, str(state / "site.pub")).returncode == 0
            key = state / "site.key"
        else:  # the pre-change CLI: the coordinator made the key pair
            assert fedcare("pki", "add-site", SITE, "--dir", str(coord)).returncode == 0
            key = coord / "sites" / SITE / "site.key"
        started = fedcare("coordinator", "start", "--dir", str(coord))
        assert started.returncode == 0, started.stderr
        address = started.stdout.split("listening on ")[1].split()[0]
        result = fedcare(
            "site", "start", "--name", SITE, "--data", str(site_paths[SITE]),
            "--state", str(state), "--key", str(key), "--ca", str(coord / "ca.crt"),
            "--coordinator", address, "--allow-non-dp",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        yield {"coord": coord, "state": state}
    finally:
        fedcare("site", "stop", "--state", str(state))
        fedcare("coordinator", "stop", "--dir", str(coord))


class Attacker:
    """The ``nobody`` process and what it reported, read as it goes."""

    def __init__(self, site: str, coordinator: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fedcare-nobody-"))
        os.chmod(self.folder, 0o777)  # the attacker's own home; holds no fedcare file
        script = self.folder / "attack.py"
        script.write_text(ATTACKER)
        os.chmod(script, 0o644)
        site_packages = str(Path(flwr.__file__).resolve().parents[1])
        env = {"HOME": str(self.folder), "PYTHONPATH": site_packages, "PATH": "/usr/bin:/bin"}
        self.findings: list[dict[str, Any]] = []
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(script), site, coordinator, str(self.folder / "STOP")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            user="nobody", group="nogroup", extra_groups=[], cwd=self.folder,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.findings.append(json.loads(line))

    def breaches(self) -> list[dict[str, Any]]:
        """What the attacker must never achieve: a task, a token, an accepted reply."""
        return [
            f
            for f in self.findings
            if f.get("outcome") == "won"
            or (f["kind"] != "acquire" and f.get("outcome") == "accepted")
            or f["kind"] in ("token-on-cmdline", "token-file-read", "worker-socket-connected")
        ]

    def stop(self) -> str:
        (self.folder / "STOP").touch()
        try:
            _, stderr = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        self._reader.join(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)
        return stderr


class AppWatcher(threading.Thread):
    """Root's view: the command line of every ClientApp/ServerApp process seen during the run,
    prestarted ClientApp workers included (proves the attacker's scan could have seen the apps'
    tokens, had they been there)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, list[str]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) in self.seen:
                    continue
                try:
                    args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                except OSError:
                    continue
                names = {Path(arg).name for arg in args[:2]} | {" ".join(args[1:3])}
                if names & {"flwr-clientapp", "flwr-serverapp", f"-m {WORKER_MODULE}"}:
                    self.seen[int(entry.name)] = args
            time.sleep(0.02)


def test_a_local_user_gets_no_task_token_or_reply_in_on_either_host(
    federation: dict[str, Path],
) -> None:
    """(a) AcquireTask on the site's and the coordinator's Runtime API is refused (401) and
    never hands out a task; (b) no process' command line carries a task token, and the token
    files named there are unreadable; (c) replies pushed with a guessed or no token are refused;
    and the run completes with the real site's replies."""
    coord, state = federation["coord"], federation["state"]
    site_api = f"127.0.0.1:{port_of(state / 'supernode.pid')}"
    coordinator_api = f"127.0.0.1:{port_of(coord / 'superlink.pid')}"
    attacker = Attacker(site_api, coordinator_api)
    watcher = AppWatcher()
    watcher.start()
    runs = coord / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    run = subprocess.Popen(
        [*FEDCARE, "coordinator", "run", "--dir", str(coord), "--min-sites", "1",
         "--rounds", "1", "--strategy", "fedavg", "--timeout", "240",
         "--preprocessing", "site"],  # one site: no federation's statistics
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"COLUMNS": "200"},
    )  # fmt: skip
    try:
        while run.poll() is None and not attacker.breaches():
            time.sleep(0.5)
        time.sleep(10.0 if attacker.breaches() else 1.0)  # what else it gets; a last scan
        breaches = attacker.breaches()
    finally:
        if run.poll() is None:
            run.kill()
        stdout, stderr = run.communicate()
        attacker_stderr = attacker.stop()
        watcher.done.set()
        watcher.join(timeout=10)
    kinds = sorted({(f["kind"], f.get("host"), f.get("outcome")) for f in breaches}, key=str)
    assert not breaches, f"the local user got in: {kinds}; first: {breaches[0]}"
    acquired = [f for f in attacker.findings if f["kind"] == "acquire"]
    assert acquired, f"the attacker never ran: {attacker_stderr[-2000:]}"
    for host in ("site", "coordinator"):
        outcomes = {f["outcome"] for f in acquired if f["host"] == host}
        assert outcomes == {"refused 401"}, (host, outcomes)
    pushes = {(f["host"], f["how"]): f["outcome"] for f in attacker.findings if f["kind"] == "push"}
    assert set(pushes) == {("site", "guessed"), ("site", "none"), ("coordinator", "guessed")}
    assert all(outcome.startswith("refused") for outcome in pushes.values()), pushes

    assert run.returncode == 0, stderr[-3000:]
    assert "round   1/1" in stdout
    (run_dir,) = set(runs.iterdir()) - before
    rounds = json.loads((run_dir / "rounds.json").read_text())
    assert list(rounds[-1]["sites"]) == [SITE]  # the real site's reply was aggregated
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    audit = [json.loads(line) for line in (state / "audit-log.jsonl").read_text().splitlines()]
    assert any(e["run_id"] == run_id and e["kind"] == "reply" for e in audit)

    apps = {Path(arg).name for args in watcher.seen.values() for arg in args[:3]}
    assert {"flwr-serverapp", WORKER_MODULE} <= apps, watcher.seen  # the site's ClientApps:
    # prestarted workers (and flwr-clientapp, started cold, if a worker had hung)
    for args in watcher.seen.values():
        assert "--token" not in args and not any(TOKEN.match(arg) for arg in args), args
        if WORKER_MODULE in args:  # its token comes over its socket, after it started
            assert "--token-file" not in args, args
        else:
            assert "--token-file" in args, args
    unreadable = [f for f in attacker.findings if f["kind"] == "token-file-unreadable"]
    assert unreadable  # the attacker saw the token files' paths and could not open them
    refused = [f for f in attacker.findings if f["kind"] == "worker-socket-refused"]
    assert refused  # the attacker found the workers' sockets and could not connect


def test_the_coordinator_runs_no_unapproved_serverapp(
    federation: dict[str, Path], tmp_path: Path
) -> None:
    """``flwr run ./app`` of a ServerApp the coordinator did not approve (a stock Flower app
    that would run other code on the coordinator host) is never launched: the run ends
    ``finished:failed`` (app-not-approved) and ``coordinator run``'s follow reports it."""
    from fedcare.errors import FedcareError
    from fedcare.flower_app import write_flower_app
    from fedcare.server.coordinator import Coordinator

    coordinator = Coordinator(federation["coord"])
    out = coordinator.new_run_folder()
    stock = "fedcare.simulations.benchmarks.stock_app"
    config = {"rounds": 1, "min-sites": 1, "out-dir": str(out)}
    coordinator.submit_app(
        write_flower_app(out / "app", config, f"{stock}:server", f"{stock}:client")
    )
    with pytest.raises(FedcareError, match=r"ended as finished:failed \(app-not-approved"):
        coordinator.follow(out, rounds=1, on_round=lambda _: None, timeout_s=90)
    assert not (out / "stock_rounds.json").exists()  # the stock ServerApp never ran


def test_each_host_secret_is_private_and_named_only_by_path(federation: dict[str, Path]) -> None:
    """The SuperExec secret (fresh random bytes each start) is 0600 on both hosts; command
    lines carry its path, never its bytes."""
    from fedcare.superexec import SECRET_FILE

    for folder in (federation["coord"], federation["state"]):
        secret = folder / SECRET_FILE
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(secret.read_bytes()) == 32
        data = secret.read_bytes()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    assert data not in (entry / "cmdline").read_bytes()


def test_a_new_start_writes_a_new_secret(tmp_path: Path) -> None:
    from fedcare.superexec import write_secret

    first = write_secret(tmp_path).read_bytes()
    second = write_secret(tmp_path).read_bytes()
    assert first != second and len(second) == 32
    assert stat.S_IMODE((tmp_path / "superexec.secret").stat().st_mode) == 0o600
