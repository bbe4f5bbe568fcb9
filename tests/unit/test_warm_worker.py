"""fedcare.prestarted with the site's real ClientApp worker (fedcare.client.warm_worker): real
worker processes, handed tasks over their sockets by the executor's own code.

The Runtime API here is a stand-in that records each request's task token and answers 404 (no
such task), so the worker's ``run_clientapp`` fails its task at once; the real SuperNode path is
tested by ``tests/e2e/test_warm_deployment.py``. Each worker preloads torch and Flower, so
these tests take seconds each, more on a busy machine.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.supercore.constant import TASK_TOKEN_HEADER, TaskType
from flwr.supercore.superexec.executor import ExecutionSpec
from flwr.supercore.task_worker_protocol import read_message, send_message

from fedcare.client.executor import WORKER_MODULE
from fedcare.prestarted import PrestartedWorkers, Worker
from fedcare.processes import flower_environment
from fedcare.superexec import TOKENS_DIR, PrestartedExecutor

pytestmark = pytest.mark.slow  # each worker process preloads torch, Opacus and Flower
READY_TIMEOUT_S = 180.0  # a worker imports torch, Opacus and Flower; CI machines are shared


class RuntimeStandIn(http.server.ThreadingHTTPServer):
    """Answers every Runtime API call with 404 after ``delay_s``, recording the task tokens."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.tokens: list[str] = []
        self.delay_s = delay_s
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stand_in.tokens.append(self.headers.get(TASK_TOKEN_HEADER, ""))
                time.sleep(stand_in.delay_s)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_port}"


@pytest.fixture
def runtime() -> Iterator[RuntimeStandIn]:
    server = RuntimeStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[PrestartedWorkers]:
    pool = PrestartedWorkers(tmp_path / "state" / "prestarted", WORKER_MODULE, "flwr-clientapp")
    yield pool
    pool.close()
    for worker in pool.busy:
        worker.stop(signal.SIGKILL)


def spec(runtime: RuntimeStandIn, token: str, task_id: int = 7) -> ExecutionSpec:
    return ExecutionSpec(
        task_type=TaskType.CLIENT_APP, runtime_api_address=runtime.address, token=token,
        insecure=True, root_certificates_path=None, runtime_dependency_install=False,
        parent_pid=os.getpid(), suppress_output=False, task_id=task_id,
    )  # fmt: skip


def wait_ready(workers: PrestartedWorkers) -> Worker:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ((worker := workers.idle) is not None and worker.is_ready()):
        assert time.monotonic() < deadline, "the prestarted worker never became ready"
        workers.reconcile()
        time.sleep(0.1)
    return worker


def command_lines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found.append((entry / "cmdline").read_bytes())
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_worker_serves_one_task_from_its_private_socket_and_exits(
    workers: PrestartedWorkers, runtime: RuntimeStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    worker = wait_ready(workers)
    assert mode(workers.folder) == 0o700 and mode(worker.socket) == 0o600
    assert stat.S_ISSOCK(worker.socket.stat().st_mode)
    token = secrets.token_hex(128)
    # Execute
    with caplog.at_level(logging.INFO, logger="fedcare.prestarted"):
        refusal = workers.hand_over(spec(runtime, token))
        lines = command_lines()  # while the task runs, and the next worker starts
        worker.process.wait(timeout=120)
        finished = f"task 7: prestarted worker {worker.process.pid} finished, exit code"
        deadline = time.monotonic() + 30
        while finished not in caplog.text:  # the exit code comes over the worker's socket
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.1)
    # Assert
    assert refusal is None
    assert runtime.tokens and set(runtime.tokens) == {token}  # it ran the task it was handed
    assert f"{finished} 1" in caplog.text  # the stand-in refused the task: the task's code
    assert not any(token.encode() in line for line in lines)
    assert not worker.socket.exists() and not worker.ready_file.exists()
    assert not worker.busy_file.exists()
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(worker.socket))  # single use: nothing listens there any more
    assert workers.idle is not None and workers.idle.process.pid != worker.process.pid


def test_a_busy_worker_never_takes_a_second_task(workers: PrestartedWorkers) -> None:
    """While its task runs, the worker's socket still exists; a second invocation sent to it
    is never accepted, and its token never reaches the Runtime API."""
    # Prepare: a Runtime API slow enough that the first task is still running
    runtime = RuntimeStandIn(delay_s=2.0)
    threading.Thread(target=runtime.serve_forever, daemon=True).start()
    try:
        worker = wait_ready(workers)
        first, second = secrets.token_hex(128), secrets.token_hex(128)
        assert workers.hand_over(spec(runtime, first)) is None
        # Execute: a second invocation straight to the busy worker's socket
        reply: object = None
        with contextlib.suppress(OSError, ValueError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(15)
            sock.connect(str(worker.socket))
            with sock.makefile("rwb") as channel:
                payload = {"token": second, "runtime_api_address": runtime.address}
                send_message(channel, payload | {"insecure": True, "root_certificates_path": None})
                reply = read_message(channel)
        worker.process.wait(timeout=120)
        # Assert
        assert reply is None  # no answer at all: closed or timed out, never "accepted"
        assert set(runtime.tokens) == {first}
    finally:
        runtime.shutdown()
        runtime.server_close()


PARENT = """
import sys, time
from pathlib import Path
from fedcare.prestarted import PrestartedWorkers
workers = PrestartedWorkers(Path(sys.argv[1]), sys.argv[2], "flwr-clientapp")
while workers.idle is None or not workers.idle.is_ready():
    workers.reconcile()
    time.sleep(0.1)
print(workers.idle.process.pid, flush=True)
time.sleep(600)
"""


def test_an_idle_worker_ends_when_its_executor_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the executor runs none of its cleanup; the idle worker, blocked waiting for a
    task, must still end itself and remove its socket."""
    # Prepare
    folder = tmp_path / "prestarted"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(folder), WORKER_MODULE], stdout=subprocess.PIPE
    )
    pid = 0
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert Path(f"/proc/{pid}").exists() and list(folder.glob("*.sock"))
        # Execute
        parent.kill()
        parent.wait()
        # Assert
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and "Z" not in stat_state(pid):
            assert time.monotonic() < deadline, "the orphaned worker is still running"
            time.sleep(0.1)
        assert list(folder.iterdir()) == []
    finally:
        if parent.poll() is None:
            parent.kill()
        with contextlib.suppress(OSError):  # a worker left running by a failure: ours only
            if str(folder).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


def stat_state(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return "gone"


def test_without_a_ready_worker_the_task_starts_cold_with_a_token_file(
    tmp_path: Path,
    runtime: RuntimeStandIn,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker module that cannot start: after three tries the workers switch off, and every
    task starts as before (flwr-clientapp --token-file), so no task is lost."""
    # Prepare
    monkeypatch.setenv("PATH", flower_environment()["PATH"])  # flwr-clientapp, as a site has
    state = tmp_path / "state"
    workers = PrestartedWorkers(state / "prestarted", "fedcare.no_such_module", "flwr-clientapp")
    executor = PrestartedExecutor(state / TOKENS_DIR, workers)
    token = secrets.token_hex(128)
    try:
        # Execute
        with caplog.at_level(logging.WARNING):
            result = executor.launch(spec(runtime, token))
        # Assert
        assert result.status == "accepted"
        assert workers.off_reason == "the fedcare.no_such_module template exited (code 1)"
        assert "task 7: cold start (prestarted workers off" in caplog.text
        (token_file,) = (state / TOKENS_DIR).iterdir()
        assert token_file.read_text() == token and mode(token_file) == 0o600
        deadline = time.monotonic() + 120
        while list((state / TOKENS_DIR).iterdir()):  # the cold app ran, failed, and exited
            assert time.monotonic() < deadline, "the cold-started app never finished"
            executor.reconcile()
            time.sleep(0.2)
        assert set(runtime.tokens) == {token}
    finally:
        executor.close()
