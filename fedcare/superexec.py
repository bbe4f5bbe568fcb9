"""A host's own app executor: Flower's SuperExec loop, authenticated, approved apps only, task
tokens in private files.

Both hosts run their Flower process with ``--isolation process``: the SuperNode (site) and the
SuperLink (coordinator) launch no app themselves; this executor, connected to their Runtime API,
does. It is Flower's ``flower-superexec`` loop over Flower's own components
(``RuntimeHttpClient``, ``AutoExecPlugin``, the subprocess executor) with three changes:

* **Only the host's executor gets tasks.** A fresh random secret (:func:`write_secret`, 0600 in
  the host's own folder) goes to the SuperNode/SuperLink (``--superexec-auth-secret-file``) and
  to this executor, which signs ``AcquireTask`` with Flower's ``SuperExecAuthHttpInterceptor``
  (as ``flower-superexec --superexec-auth-secret-file`` does). Any other local process gets 401.
* **Task tokens never appear on a command line.** Flower's subprocess executor starts
  ``flwr-clientapp --token TOKEN``, readable by every local user in ``/proc/PID/cmdline``.
  :class:`TokenFileExecutor` writes the token to a 0600 file in a 0700 folder and starts the
  app with ``--token-file``; the file is deleted when the app exits (or the executor stops).
* **Only approved app bundles run.** A task whose FAB hash is not approved is never launched;
  the host answers it at once (``on_refused``) so the run ends instead of waiting for the token
  to expire.

A host may also name a prestarted worker module (the site does: :mod:`fedcare.client.warm_worker`):
:class:`PrestartedExecutor` then hands each approved task to a worker process started before the
task arrived (:mod:`fedcare.prestarted`; its token over a 0600 socket, never a file or command
line) and starts a task cold, as above, only when no worker is ready.

Why a FAB hash is a meaningful approval: fedcare's FAB holds only a ``pyproject.toml`` naming
``fedcare.server.app:app`` and ``fedcare.client.app:app`` with default settings (run settings
travel as run config), so every run of one fedcare version has the same FAB hash, which each
host computes itself from the version it installed (:func:`fedcare_fab_hash`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcare.atomic import write_bytes_atomic
from fedcare.prestarted import PrestartedWorkers

if TYPE_CHECKING:
    from flwr.proto.task_pb2 import Task
    from flwr.supercore.constant import TaskType
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult

log = logging.getLogger("fedcare.superexec")

POLL_INTERVAL_S = 0.2
SECRET_FILE = "superexec.secret"
TOKENS_DIR = "task-tokens"
WORKERS_DIR = "prestarted"
SECRET_BYTES = 32
# The Runtime API call that hands out tasks and their tokens: the one Flower's SuperExec signs.
ACQUIRE_TASK = "/flwr.proto.Runtime/AcquireTask"

OnRefused = Callable[["Task", str], None]


def write_secret(folder: Path) -> Path:
    """A fresh random SuperExec secret in ``folder`` (0600), replacing any earlier one: a
    secret read from a previous start opens nothing after a restart."""
    path = folder / SECRET_FILE
    write_bytes_atomic(path, secrets.token_bytes(SECRET_BYTES))  # mkstemp: created 0600
    os.chmod(path, 0o600)
    return path


def fab_hash(app: Path) -> str:
    """sha256 of the FAB that ``flwr build`` (as ``flwr run``) makes from the app folder ``app``."""
    from fedcare.processes import flower_environment

    with tempfile.TemporaryDirectory(prefix="fedcare-fab-") as tmp:
        environment = flower_environment(Path(tmp) / "home")
        subprocess.run(
            ["flwr", "build", "--app", str(app.resolve())], cwd=tmp, env=environment,
            capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        (fab,) = Path(tmp).glob("*.fab")
        return hashlib.sha256(fab.read_bytes()).hexdigest()


def fedcare_fab_hash() -> str:
    """The hash of the FAB that this installed fedcare version submits for every run."""
    from fedcare.config import RunConfig
    from fedcare.flower_app import write_flower_app
    from fedcare.runtime_keys import default_runtime_config  # the FAB's defaults (core)

    with tempfile.TemporaryDirectory(prefix="fedcare-app-") as tmp:
        defaults = RunConfig().to_run_config() | default_runtime_config()
        return fab_hash(write_flower_app(Path(tmp) / "app", defaults))


class TokenFileExecutor:
    """Flower's subprocess executor, but the task token travels in a private file.

    The app command line is the one Flower's ``SubprocessExecutor.launch`` builds, with
    ``--token-file PATH`` in place of ``--token TOKEN`` (``flwr-clientapp`` and
    ``flwr-serverapp`` accept both)."""

    def __init__(self, tokens_dir: Path) -> None:
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

        self._flower = SubprocessExecutor()  # capacity rules: Flower's own
        tokens_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(tokens_dir, 0o700)
        for stale in tokens_dir.iterdir():  # left by a killed executor; their tasks are gone
            stale.unlink(missing_ok=True)
        self.tokens_dir = tokens_dir
        self._running: dict[Path, subprocess.Popen[bytes]] = {}

    def get_eligible_capacity(
        self,
        supported_task_types: set[TaskType],
        *,
        insecure: bool = False,
        root_certificates_path: str | None = None,
    ) -> tuple[set[TaskType], set[str]]:
        return self._flower.get_eligible_capacity(
            supported_task_types, insecure=insecure, root_certificates_path=root_certificates_path
        )

    def wait_for_capacity(
        self,
        task_type: TaskType | None = None,
        *,
        fab_hash: str | None = None,
        insecure: bool = False,
        root_certificates_path: str | None = None,
    ) -> None:
        self._flower.wait_for_capacity(
            task_type, fab_hash=fab_hash, insecure=insecure,
            root_certificates_path=root_certificates_path,
        )  # fmt: skip

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        from flwr.supercore.constant import (
            TASK_TYPE_TO_APPIO_API_ADDRESS_ARG,
            TASK_TYPE_TO_COMMAND,
        )
        from flwr.supercore.superexec.executor import LaunchResult

        fd, name = tempfile.mkstemp(prefix="task-", suffix=".token", dir=self.tokens_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: 0600, this user only
            handle.write(spec.token)
        token_file = Path(name)
        args = [
            TASK_TYPE_TO_COMMAND[spec.task_type],
            TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[spec.task_type], spec.runtime_api_address,
            "--token-file", str(token_file),
        ]  # fmt: skip
        if spec.insecure:
            args.append("--insecure")
        elif spec.root_certificates_path is not None:
            args.extend(["--root-certificates", spec.root_certificates_path])
        if spec.parent_pid is not None:
            args.extend(["--parent-pid", str(spec.parent_pid)])
        if spec.runtime_dependency_install:
            args.append("--allow-runtime-dependency-installation")
        quiet = subprocess.DEVNULL if spec.suppress_output else None
        try:
            self._running[token_file] = subprocess.Popen(args, stdout=quiet, stderr=quiet)
        except OSError as exc:
            token_file.unlink(missing_ok=True)
            return LaunchResult.failed(f"could not start {args[0]}: {exc}")
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Delete the token file of every app process that has exited."""
        for token_file, process in list(self._running.items()):
            if process.poll() is not None:
                token_file.unlink(missing_ok=True)
                del self._running[token_file]

    def close(self) -> None:
        """Delete every token file; the apps end themselves when this process exits
        (they were started with ``--parent-pid``)."""
        for token_file in self._running:
            token_file.unlink(missing_ok=True)
        self._running.clear()
        self._flower.close()


class PrestartedExecutor(TokenFileExecutor):
    """A :class:`TokenFileExecutor` whose tasks go to prestarted workers when one is ready.

    Capacity rules, token files and cleanup are the cold executor's own (inherited), and it
    starts every task no worker took (a worker hung while preloading, one that
    did not accept the task, workers switched off), so a task is never lost to the warm path.
    Launch is reached only for approved tasks (:func:`run_executor` checks the FAB hash first),
    whichever path starts them."""

    def __init__(self, tokens_dir: Path, workers: PrestartedWorkers) -> None:
        super().__init__(tokens_dir)
        self.workers = workers

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        from flwr.supercore.superexec.executor import LaunchResult

        if spec.runtime_dependency_install:  # workers never install dependencies
            why: str | None = "the task asks for runtime dependency installation"
        else:
            why = self.workers.hand_over(spec)
        if why is None:
            return LaunchResult.accepted()
        log.warning("task %d: cold start (%s)", spec.task_id, why)
        return super().launch(spec)

    def reconcile(self) -> None:
        super().reconcile()
        self.workers.reconcile()

    def close(self) -> None:
        self.workers.close()
        super().close()


@dataclass(frozen=True)
class ExecutorSettings:
    """What one host's executor needs: where its Runtime API is, how to reach it, its secret,
    which task type it runs and which app bundles it may launch."""

    runtime_api_address: str
    secret_file: Path
    state_dir: Path
    approved: frozenset[str]
    task_type: TaskType
    root_certificates: Path | None = None  # None: plain HTTP on loopback (the SuperNode)


def runtime_client(settings: ExecutorSettings, *interceptors: Any) -> RuntimeHttpClient:
    """A Runtime API client for this host's executor or for one task (with the task token's
    interceptor): TLS with the host's root certificates, or plain HTTP on the site's loopback."""
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    insecure = settings.root_certificates is None
    return RuntimeHttpClient.from_server_address(
        server_address=settings.runtime_api_address, insecure=insecure,
        root_certificates=None if insecure else str(settings.root_certificates),
        interceptors=list(interceptors), retry_invoker=make_simple_http_retry_invoker(),
    )  # fmt: skip


def run_executor(
    settings: ExecutorSettings, on_refused: OnRefused, worker_module: str | None = None
) -> None:
    """Poll the Runtime API for tasks (signed with the host's secret); launch approved ones,
    hand unapproved ones to ``on_refused(task, token)`` once each. With ``worker_module``,
    approved tasks go to prestarted workers of that module (:class:`PrestartedExecutor`)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.auth import load_superexec_auth_secret
    from flwr.supercore.interceptors import (
        RuntimeVersionHttpInterceptor,
        SuperExecAuthHttpInterceptor,
    )
    from flwr.supercore.superexec.plugin import AutoExecPlugin

    secret = load_superexec_auth_secret(str(settings.secret_file))
    assert secret is not None  # a path was given
    insecure = settings.root_certificates is None
    certificates = None if insecure else str(settings.root_certificates)
    client = runtime_client(
        settings,
        RuntimeVersionHttpInterceptor(component_name="SuperExec"),
        SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods={ACQUIRE_TASK}),
    )
    tokens = settings.state_dir / TOKENS_DIR
    if worker_module is None:
        executor = TokenFileExecutor(tokens)
    else:  # the template starts preloading now
        workers = PrestartedWorkers(
            settings.state_dir / WORKERS_DIR, worker_module, str(settings.task_type)
        )
        executor = PrestartedExecutor(tokens, workers)

    class _Plugin(AutoExecPlugin):
        supported_task_types = frozenset({settings.task_type})

    plugin = _Plugin(
        runtime_api_address=settings.runtime_api_address, insecure=insecure,
        root_certificates_path=certificates, runtime_dependency_install=False,
        executor=executor,
    )  # fmt: skip
    refused: set[int] = set()
    log.info("executor: approved app bundles %s", sorted(settings.approved))
    try:
        while True:
            executor.reconcile()
            types, agent_hashes = executor.get_eligible_capacity(
                set(plugin.supported_task_types), insecure=insecure,
                root_certificates_path=certificates,
            )  # fmt: skip
            reply = client.AcquireTask(
                AcquireTaskRequest(supported_task_types=types, agentapp_fab_hashes=agent_hashes)
            )
            if reply.HasField("task") and reply.token:
                task = reply.task
                if task.fab_hash in settings.approved:
                    result = plugin.launch_task(token=reply.token, task=task)
                    if result.message:
                        log.warning("launch of task %s: %s", task.task_id, result.message)
                elif task.task_id not in refused:
                    refused.add(task.task_id)
                    log.warning(
                        "refused unapproved app bundle %s (run %s)", task.fab_hash, task.run_id
                    )
                    on_refused(task, reply.token)
            time.sleep(POLL_INTERVAL_S)
    finally:
        client.close()
        executor.close()


def executor_argv(module: str, settings: ExecutorSettings) -> list[str]:
    """The command line that starts ``module``'s :func:`main` with ``settings`` (no secret
    and no token on it: the secret is named by path, the file is 0600)."""
    argv = [
        sys.executable, "-m", module,
        "--runtime-api-address", settings.runtime_api_address,
        "--superexec-auth-secret-file", str(settings.secret_file.resolve()),
        "--state", str(settings.state_dir.resolve()),
        *(arg for app in sorted(settings.approved) for arg in ("--approve", app)),
    ]  # fmt: skip
    if settings.root_certificates is not None:
        argv += ["--root-certificates", str(settings.root_certificates.resolve())]
    return argv


def main(
    description: str,
    task_type: TaskType,
    refuse: Callable[[ExecutorSettings], OnRefused],
    worker_module: str | None = None,
) -> None:
    """The executor process: parse :func:`executor_argv`'s options and run the loop (with
    prestarted workers of ``worker_module``, if named)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--superexec-auth-secret-file", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--approve", action="append", default=[], help="approved FAB sha256")
    parser.add_argument("--root-certificates", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one request per poll otherwise
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # runs the finally: token files go
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    settings = ExecutorSettings(
        runtime_api_address=args.runtime_api_address,
        secret_file=args.superexec_auth_secret_file,
        state_dir=args.state,
        approved=frozenset(args.approve),
        task_type=task_type,
        root_certificates=args.root_certificates,
    )
    with contextlib.suppress(KeyboardInterrupt):
        run_executor(settings, refuse(settings), worker_module)
