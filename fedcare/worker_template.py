"""The worker side of fedcare's prestarted app workers (:mod:`fedcare.prestarted` has the
whole design): the template process that preloads once and forks one single-use worker per
task, and what a forked worker does with its one task. Everything here runs inside the template
or its workers, never in the executor.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from flwr.supercore.typing import JSONObject

log = logging.getLogger("fedcare.prestarted")

PARENT_POLL_S = 0.2

# Flower's RunTaskOnce: (runtime API address, token, insecure, root certificates, on_started).
RunOnce = Callable[[str, str, bool, bytes | None, Callable[[], None]], int]


@dataclass(frozen=True)
class Invocation:
    """One task handed to a worker: what Flower's task_worker payload carries."""

    token: str = field(repr=False)  # never in a log line or a traceback's repr
    runtime_api_address: str
    insecure: bool
    root_certificates_path: str | None

    @classmethod
    def from_payload(cls, payload: object, task_name: str) -> Invocation:
        """Flower's own validation of the four fields (and of nothing more)."""
        from flwr.supercore.task_worker import parse_invocation_payload

        return cls(*parse_invocation_payload(payload, task_name))

    def payload(self) -> JSONObject:
        return {
            "token": self.token,
            "runtime_api_address": self.runtime_api_address,
            "insecure": self.insecure,
            "root_certificates_path": self.root_certificates_path,
        }


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[Path]:
    """``path`` through its folder's file descriptor (``/proc/self/fd/N/NAME``), for as long as
    the context lasts. A Unix socket's path holds at most 107 bytes, and a site's state folder
    may be deeper than that (a CI machine's temporary folders are); the kernel follows the alias
    to the same file, so the socket still lives in the host's private folder."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield Path(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)


def watch_parent(parent_pid: int) -> None:
    """SIGTERM this process once its parent (the executor) is gone.

    Flower's ``start_parent_process_monitor`` raises the signal in its own thread, which does
    not interrupt an idle worker's main thread blocked in ``accept()``; a signal sent to the
    process does. Re-parenting is checked rather than the pid's existence, so a reused pid
    cannot keep an orphan alive."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_main(
    task_name: str, preload: Callable[[], RunOnce], argv: Sequence[str] | None = None
) -> NoReturn:
    """The template process: preload once, then fork one single-use worker per request on the
    control socket (module docstring). It never runs a task itself."""
    import socket

    from flwr.supercore.task_worker_protocol import read_message, send_message

    parser = argparse.ArgumentParser(description=f"Prestarted single-use {task_name} workers")
    parser.add_argument("mode", choices=["template"])
    parser.add_argument("--control", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    control, ready = args.control, args.control.with_suffix(".ready")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # runs the finally: files go
    watch_parent(args.parent_pid)
    run_once = _writing_directly(preload())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            control.unlink(missing_ok=True)
            with short_path(control) as alias:
                server.bind(str(alias))
            control.chmod(0o600)
            server.listen(8)
            ready.touch()
            while True:
                connection, _ = server.accept()
                with connection, connection.makefile("rwb") as channel:
                    request = read_message(channel)
                    pid = os.fork()
                    if pid == 0:  # the worker: serves one task, never returns
                        server.close()
                        _serve_forked(request, run_once, task_name)
                    send_message(channel, {"pid": pid})
                    _reap()
    finally:
        ready.unlink(missing_ok=True)
        control.unlink(missing_ok=True)


def _reap() -> None:
    """Collect forked workers that exited (their exit codes reach the executor over their
    sockets), so none is left a zombie."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _serve_forked(request: JSONObject, run_once: RunOnce, task_name: str) -> NoReturn:
    """In a forked worker: serve exactly one invocation on the socket named in ``request``,
    then leave with the task's exit code (``os._exit``: the template's cleanup is not ours)."""
    from flwr.supercore.task_worker import serve_prestarted_worker

    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # Flower's idle handlers replace it
        watch_parent(os.getppid())  # threads do not survive fork(): watch the template
        with short_path(Path(str(request["socket"]))) as alias:  # bound, then unlinked
            code = serve_prestarted_worker(
                alias, Path(str(request["ready_file"])), Path(str(request["busy_file"])),
                run_once, lambda payload: Invocation.from_payload(payload, task_name), task_name,
            )  # fmt: skip
    except SystemExit as exc:  # Flower's apps end in flwr_exit
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        log.exception("prestarted %s worker failed", task_name)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _writing_directly(run_once: RunOnce) -> RunOnce:
    """``run_once`` with the task's output going where a cold app's goes: this process' own
    stdout/stderr, the executor's log it inherited. Flower's worker relays task output over the
    socket instead (for a Kubernetes exec stream), and its bounded relay drops output once 64
    frames are queued, as a traceback's many small writes do; a local log needs no relay."""
    from flwr.supercore.logger import console_handler

    stdout, stderr = sys.stdout, sys.stderr

    def run(
        runtime_api_address: str,
        token: str,
        insecure: bool,
        certificates: bytes | None,
        on_started: Callable[[], None],
    ) -> int:
        def started() -> None:
            on_started()  # Flower's relay takes stdout, stderr and its log handler here ...
            sys.stdout, sys.stderr = stdout, stderr  # ... and gives them back (restored again
            console_handler.setStream(stderr)  # to these same streams when the task ends)

        return run_once(runtime_api_address, token, insecure, certificates, started)

    return run
