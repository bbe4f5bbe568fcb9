"""The site's own app executor: runs a ClientApp only if the site approved its app bundle.

Flower's SuperNode, started with ``--isolation process``, does not launch ClientApps itself; an
executor process connected to its Runtime API does. Flower's executor (``flower-superexec``)
launches whatever app a run names. This one is the same loop over the same Flower components
(``RuntimeHttpClient``, ``AutoExecPlugin`` and the subprocess executor) with one added check:
the task's FAB hash must be in the site's approved list. An unapproved task is never launched:
the executor answers it at once, through the same Runtime API calls a ClientApp process makes,
with an error reply carrying only ``app-not-approved``, and the site's audit log records the
refusal. The coordinator's round goes on without the site, and the SuperNode is free for the
next run (a task left unanswered would hold it until Flower's token expired).

Why a FAB hash is a meaningful approval: fedcare's FAB holds only a ``pyproject.toml`` naming
``fedcare.server.app:app`` and ``fedcare.client.app:app`` with default settings (run settings
travel as run config), so every run of one fedcare version has the same FAB hash, which the site
computes itself from the version it installed (:func:`fedcare_fab_hash`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("fedcare.site.executor")

POLL_INTERVAL_S = 0.2


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
    from fedcare.server.app import default_runtime_config

    with tempfile.TemporaryDirectory(prefix="fedcare-app-") as tmp:
        defaults = RunConfig().to_run_config() | default_runtime_config()
        return fab_hash(write_flower_app(Path(tmp) / "app", defaults))


def run_executor(runtime_api_address: str, approved: set[str], state_dir: Path) -> None:
    """Poll the SuperNode for ClientApp tasks; launch approved ones with Flower's executor."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import ExecutorType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.superexec.executor import get_executor
    from flwr.supercore.superexec.plugin import AutoExecPlugin

    from fedcare.client.audit import refusal_entry

    executor = get_executor(
        ExecutorType.SUBPROCESS, executor_config=None, insecure=True, root_certificates_path=None
    )
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )  # fmt: skip
    plugin = AutoExecPlugin(
        runtime_api_address=runtime_api_address, insecure=True, root_certificates_path=None,
        runtime_dependency_install=False, executor=executor,
    )  # fmt: skip
    refused: set[str] = set()
    log.info("site executor: approved app bundles %s", sorted(approved))
    try:
        while True:
            executor.reconcile()
            types, agent_hashes = executor.get_eligible_capacity(
                set(plugin.supported_task_types), insecure=True, root_certificates_path=None
            )
            reply = client.AcquireTask(
                AcquireTaskRequest(supported_task_types=types, agentapp_fab_hashes=agent_hashes)
            )
            if reply.HasField("task") and reply.token:
                task = reply.task
                if task.fab_hash in approved:
                    plugin.launch_task(token=reply.token, task=task)
                elif task.task_id not in refused:
                    refused.add(task.task_id)
                    log.warning(
                        "refused unapproved app bundle %s (run %s)", task.fab_hash, task.run_id
                    )
                    refusal_entry(state_dir, str(task.run_id), task.fab_hash)
                    _answer_refusal(runtime_api_address, reply.token)
            time.sleep(POLL_INTERVAL_S)
    finally:
        client.close()
        executor.close()


def _answer_refusal(runtime_api_address: str, token: str) -> None:
    """Reply to the refused task with an ``app-not-approved`` error and close it, using the
    Runtime API calls of Flower's own ClientApp process (its task token, its helpers)."""
    from flwr.app import Error, Message
    from flwr.common.constant import SubStatus
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    from fedcare import messages as keys

    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeTokenHttpInterceptor(token)],
        retry_invoker=make_simple_http_retry_invoker(),
    )  # fmt: skip
    try:
        message, context, _, _ = pull_task_input(client)
        code = keys.REFUSAL_CODES[keys.REFUSED_APP]
        push_message(
            client, Message(Error(code=code, reason=keys.REFUSED_APP), reply_to=message), context
        )
        push_task_output(client, context, SubStatus.FAILED, keys.REFUSED_APP)
    except Exception:  # the refusal stands either way; Flower's expiry is the fallback
        log.exception("could not answer the refused task; it will expire instead")
    finally:
        client.close()


def main() -> None:
    """``python -m fedcare.client.executor``: started by ``fedcare site start``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--approve", action="append", default=[], help="approved FAB sha256")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one request per poll otherwise
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    run_executor(args.runtime_api_address, set(args.approve), args.state)


if __name__ == "__main__":
    main()
