"""Prestarted app workers: a task's process is started before the task arrives.

Why: an app process started for a task (``flwr-clientapp --token-file F``) first imports Python,
Flower, torch, Opacus and fedcare (about 3.5 s on an idle machine), and a site runs two such
tasks per round (train, evaluate), so that start-up sat on every round's critical path. A
prestarted worker pays it while the host waits for work: it preloads what a task needs, then
serves exactly ONE task handed to it over a private Unix socket, and exits. Each task still gets a
fresh process of its own (Flower's isolation between tasks is kept); it was only started earlier.

Both ends of Flower's protocol for single-use prestarted task workers
(:mod:`flwr.supercore.task_worker`, the one Flower's own Model and AgentApp workers use): the
worker side in :mod:`fedcare.worker_template`, the executor side here.

* the template, :func:`fedcare.worker_template.worker_main`: ``python -m MODULE template --control C
  --parent-pid P`` preloads ONCE, then, for each request on its control socket ``C``, forks a
  worker. A forked worker waits for one invocation on its own socket (Flower's
  ``serve_prestarted_worker``), runs it and exits. Why fork: three sites on one 2-core host that
  each re-imported torch after every task spent the round's CPU on imports (a round took 11-16 s,
  preloading bound); a fork costs milliseconds and the template itself never runs a task, so every
  task starts from the same pristine, preloaded state - the isolation of a fresh process. Nothing
  secret is on any command line: the task token arrives later, over the worker's socket.
* the executor side, :class:`PrestartedWorkers`: starts the template, keeps one forked worker
  ready, hands it a task (token, Runtime API address, TLS settings) over its socket, asks for the
  next one, and relays the worker's output into the executor's log.

What keeps this as private as a token file: the sockets and ready/busy files live in a folder of
the host's state (0700, never Flower's shared ``/tmp`` default, since several sites may share a
machine), and each socket is 0600; the token exists only in the executor's memory, on that
socket and in the worker's memory. The template ends itself once its executor is gone, and a
forked worker once its template is gone (each polls its parent pid, as ``--parent-pid`` does for
Flower's apps); all are in the executor's process group, so stopping the host stops them too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fedcare.worker_template import Invocation, short_path

if TYPE_CHECKING:
    from flwr.supercore.superexec.executor import ExecutionSpec
    from flwr.supercore.typing import JSONObject

log = logging.getLogger("fedcare.prestarted")

# A task waits while the worker template preloads (a cold start would begin the same imports
# from zero, competing with it for the CPU: preloads of 20-50 s were measured on a loaded 2-core
# host). Only a template, or a forked worker, not ready this long after its start is taken for
# hung: killed, and the task starts cold.
READY_LIMIT_S = 120.0
# How long a worker has to confirm it took a task; one that does not is killed before the task
# starts cold, so a task never runs twice.
ACCEPT_TIMEOUT_S = 10.0
# A worker that exits before it is ready three times in a row is not restarted: tasks start cold.
MAX_FAILED_STARTS = 3
POLL_S = 0.05
STOP_TIMEOUT_S = 5.0


class ForkedProcess:
    """A worker forked by the template, seen from the executor: not the executor's child, so
    it is followed by pid and kernel start time (a reused pid is never taken for it). Offers
    what :class:`Worker` uses of ``subprocess.Popen``; the exit code itself travels over the
    worker's socket, so ``returncode`` is -1 once it is gone."""

    def __init__(self, pid: int) -> None:
        from fedcare.processes import process_stat

        stat = process_stat(pid)
        self.pid = pid
        self._start_time = stat.start_time if stat else None
        self.returncode: int | None = None if stat else -1

    def poll(self) -> int | None:
        from fedcare.processes import process_stat

        if self.returncode is None:
            stat = process_stat(self.pid)
            if stat is None or stat.start_time != self._start_time:
                self.returncode = -1
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
            time.sleep(POLL_S)
        return code


@dataclass
class Worker:
    """One prestarted worker process and its files."""

    process: ForkedProcess
    socket: Path
    ready_file: Path
    busy_file: Path
    started: float  # time.monotonic() at start

    def is_ready(self) -> bool:
        return self.process.poll() is None and self.ready_file.exists()

    def remove_files(self) -> None:
        for path in (self.socket, self.ready_file, self.busy_file):
            path.unlink(missing_ok=True)

    def stop(self, sig: signal.Signals) -> None:
        """Signal the worker, wait for it (SIGKILL after STOP_TIMEOUT_S), remove its files."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.remove_files()


class PrestartedWorkers:
    """Keeps one prestarted worker of ``module`` ready in ``folder`` and hands tasks to it.

    Single-use: a worker that took a task never takes another (Flower's worker serves one
    connection and exits); the next worker starts as soon as one is handed a task."""

    def __init__(self, folder: Path, module: str, task_name: str) -> None:
        from fedcare.processes import private_dir

        self.folder = private_dir(folder)
        for stale in folder.iterdir():  # left by a killed executor; their workers ended too
            stale.unlink(missing_ok=True)
        self.module = module
        self.task_name = task_name
        self._count = 0
        self._failed_starts = 0
        self.idle: Worker | None = None  # the worker waiting for a task
        self.busy: list[Worker] = []  # workers that took a task and have not been reaped
        self.off_reason: str | None = None
        self.template: subprocess.Popen[bytes] | None = None
        self.control = folder / f"{os.getpid()}-template.sock"
        self._template_started = 0.0
        self._start_template()

    def _paths(self, number: int) -> tuple[Path, Path, Path]:
        stem = self.folder / f"{os.getpid()}-{number}"
        return stem.with_suffix(".sock"), stem.with_suffix(".ready"), stem.with_suffix(".busy")

    def _switch_off(self, reason: str) -> None:
        self.off_reason = reason
        log.error("prestarted %s workers off (%s); every task starts cold", self.task_name, reason)

    def _start_template(self) -> None:
        """Start the template that preloads and forks the workers (returns at once)."""
        argv = [
            sys.executable, "-m", self.module, "template", "--control", str(self.control),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        try:  # output inherited: the executor's log, as for an app started cold
            self.template = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        except OSError as exc:
            self._switch_off(f"could not start {self.module}: {exc}")
        self._template_started = time.monotonic()

    def template_ready(self) -> bool:
        """Whether the template preloaded and listens for fork requests."""
        template = self.template
        return (
            template is not None
            and template.poll() is None
            and self.control.with_suffix(".ready").exists()
        )

    def _start(self) -> None:
        """Fork the next worker, waiting while the template preloads; switch the workers off
        if the template exited or never became ready."""
        while not self.template_ready():
            template = self.template
            if template is None or template.poll() is not None:
                code = None if template is None else template.returncode
                self._switch_off(f"the {self.module} template exited (code {code})")
                return
            if time.monotonic() - self._template_started > READY_LIMIT_S:
                template.kill()
                self._switch_off(
                    f"the template was not ready {READY_LIMIT_S:.0f} s after its start"
                )
                return
            time.sleep(POLL_S)
        self._count += 1
        socket, ready, busy = self._paths(self._count)
        request: JSONObject = {
            "socket": str(socket),
            "ready_file": str(ready),
            "busy_file": str(busy),
        }
        try:
            pid = _fork_request(self.control, request)
        except (OSError, ValueError) as exc:
            self._switch_off(f"the template forked no worker ({exc})")
            return
        self.idle = Worker(ForkedProcess(pid), socket, ready, busy, time.monotonic())

    def _unusable(self, worker: Worker) -> str | None:
        """Why a worker that is not ready never will be (None: it is still preloading)."""
        if worker.process.poll() is not None:
            return f"exited (code {worker.process.returncode}) before it was ready"
        if time.monotonic() - worker.started > READY_LIMIT_S:
            return f"was not ready {READY_LIMIT_S:.0f} s after its start"
        return None

    def _replace(self, worker: Worker, why: str) -> None:
        worker.stop(signal.SIGKILL)  # one that exited: only its files are removed
        self.idle = None
        self._failed_starts += 1
        log.warning("prestarted %s worker %d %s", self.task_name, worker.process.pid, why)
        if self._failed_starts >= MAX_FAILED_STARTS:
            self._switch_off(f"{MAX_FAILED_STARTS} workers in a row were never ready")
        else:
            self._start()

    def _take(self) -> Worker | None:
        """The ready worker, waiting while the template preloads; None if it hung (or workers
        are off). One that exited early is replaced and the replacement waited for: a cold
        start would be no sooner."""
        if self.idle is None and self.off_reason is None:
            self._start()
        while (worker := self.idle) is not None:
            if worker.is_ready():
                self.idle, self._failed_starts = None, 0
                return worker
            if (why := self._unusable(worker)) is not None:
                hung = worker.process.poll() is None
                self._replace(worker, why)
                if hung:  # this task starts cold; the next one gets the replacement
                    return None
            else:
                time.sleep(POLL_S)
        return None

    def hand_over(self, spec: ExecutionSpec) -> str | None:
        """Give the task to the ready worker. None when a worker accepted it; otherwise why
        not (the task was not started, and the caller starts it cold)."""
        worker = self._take()
        if self.off_reason is not None:  # also when the last try failed while waiting
            return f"prestarted workers off: {self.off_reason}"
        if worker is None:
            return f"the prestarted worker was not ready {READY_LIMIT_S:.0f} s after its start"
        invocation = Invocation(
            spec.token, spec.runtime_api_address, spec.insecure,
            None if spec.insecure else spec.root_certificates_path,
        )  # fmt: skip
        try:
            channel = _dispatch(worker.socket, invocation)
        except (OSError, ValueError) as exc:  # never started: kill it, so it never can
            worker.stop(signal.SIGKILL)
            self._start()
            return f"prestarted worker {worker.process.pid} did not take the task ({exc})"
        self.busy.append(worker)
        self._start()  # the next task's worker preloads while this one runs
        log.info(
            "task %d: handed to prestarted %s worker %d (forked %.1f s before from template %s)",
            spec.task_id, self.task_name, worker.process.pid, time.monotonic() - worker.started,
            self.template.pid if self.template else "?",
        )  # fmt: skip
        relay = threading.Thread(
            target=_relay, args=(channel, spec.task_id, worker.process.pid), daemon=True
        )
        relay.start()
        return None

    def reconcile(self) -> None:
        """Reap workers that finished their task; replace an idle one that died."""
        for worker in list(self.busy):
            if worker.process.poll() is not None:
                worker.remove_files()
                self.busy.remove(worker)
        idle = self.idle
        if idle is not None and not idle.is_ready() and (why := self._unusable(idle)) is not None:
            self._replace(idle, why)
        if self.idle is None and self.off_reason is None and self.template_ready():
            self._start()  # the first worker, once the template has preloaded

    def close(self) -> None:
        """Stop the idle worker (SIGTERM: Flower's idle handler removes its files), then the
        template. Busy ones end their task, then themselves once the template is gone (they
        watch their parent)."""
        idle, self.idle = self.idle, None
        if idle is not None:
            idle.stop(signal.SIGTERM)
        template, self.template = self.template, None
        if template is not None and template.poll() is None:
            template.terminate()
            try:
                template.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                template.kill()
                template.wait()


def _fork_request(control: Path, request: JSONObject) -> int:
    """Ask the template at ``control`` to fork a worker for ``request``; the worker's pid."""
    import socket

    from flwr.supercore.task_worker_protocol import read_message, send_message

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(ACCEPT_TIMEOUT_S)
        with short_path(control) as alias:
            connection.connect(str(alias))
        with connection.makefile("rwb") as channel:
            send_message(channel, request)
            pid = read_message(channel).get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError(f"the template answered {pid!r}, not a pid")
    return pid


class _Channel(Protocol):
    """The worker connection as both ends use it: Flower's MessageChannel, closeable."""

    def readline(self, size: int = -1, /) -> bytes: ...
    def write(self, data: bytes, /) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def _dispatch(socket_path: Path, invocation: Invocation) -> _Channel:
    """Send the invocation; return the channel once the worker accepted it. Raises OSError or
    ValueError when it did not (rejected, closed, or silent for ACCEPT_TIMEOUT_S)."""
    import socket

    from flwr.supercore.task_worker_protocol import read_message, send_message

    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel: _Channel | None = None
    try:
        connection.settimeout(ACCEPT_TIMEOUT_S)
        with short_path(socket_path) as alias:
            connection.connect(str(alias))
        channel = opened = connection.makefile("rwb")
        send_message(opened, invocation.payload())
        reply = read_message(opened)
        if reply != {"event": "accepted"}:
            raise ValueError(f"worker answered {reply.get('event')!r}: {reply.get('reason')}")
        connection.settimeout(None)  # the task may run for long; its end closes the socket
        return opened
    except BaseException:
        if channel is not None:
            channel.close()
        raise
    finally:
        connection.close()  # an open channel keeps the socket open until the channel closes


def _relay(channel: _Channel, task_id: int, pid: int) -> None:
    """Copy the worker's (token-redacted) output into this process' output, the executor's log,
    as an app started cold writes there; log the task's exit code."""
    from flwr.supercore.task_worker_protocol import read_message

    code: object = "unknown (connection lost)"
    try:
        while True:
            try:
                message = read_message(channel)
            except (OSError, ValueError):
                break
            if message.get("event") == "output":
                stream = sys.stderr if message.get("stream") == "stderr" else sys.stdout
                with contextlib.suppress(OSError, ValueError):
                    stream.write(str(message.get("data", "")))
                    stream.flush()
            elif message.get("event") == "finished":
                code = message.get("returncode")
                break
    finally:
        channel.close()
    log.info("task %d: prestarted worker %d finished, exit code %s", task_id, pid, code)
