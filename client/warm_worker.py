"""The site's prestarted ClientApp worker: Flower's ``flwr-clientapp``, started before its task.

Flower ships prestarted workers for its Model and AgentApp tasks only; this is the ClientApp one, on
the same machinery (:mod:`fedcare.prestarted`, :mod:`fedcare.worker_template`). The site's executor
(:mod:`fedcare.client.executor`) starts its template, which imports everything a fedcare ClientApp
task needs once, while the site waits for work, and forks one single-use worker per task; the worker
runs exactly one task with Flower's own ``run_clientapp`` (the function ``flwr-clientapp`` runs), so
a task is served by the same code as a cold start: same Runtime API calls, same FAB install and app
loading, same reply and exit.
Only approved tasks reach it: the executor hands over a task only after its FAB hash passed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from fedcare.worker_template import RunOnce, worker_main

TASK_NAME = "ClientApp"
# What a fedcare ClientApp task imports, the lazily imported ones included (Opacus for DP-SGD
# and accounting, the task modules): each is a cost the task would otherwise pay after arrival.
PRELOAD = (
    "flwr.supernode.runtime.run_clientapp",
    "fedcare.client.app",
    "fedcare.privacy.dp_sgd",
    "fedcare.privacy.accounting",
    "opacus.accountants",
    "opacus.accountants.utils",
)


def preload() -> RunOnce:
    """Import the ClientApp task path; return the function that runs one task.

    Importing must not change what a task logs: Opacus configures the root logger when
    imported (``logging.basicConfig`` in ``opacus.utils.module_utils``), which would print
    every Flower log line a second time, past the worker's output relay. A cold non-DP task
    never imports Opacus, so the handlers the imports added are removed again."""
    from fedcare.tasks.names import TASK_CLASSES

    root = logging.getLogger()
    before = list(root.handlers)
    for module in (*PRELOAD, *(ref.partition(":")[0] for ref in TASK_CLASSES.values())):
        importlib.import_module(module)
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
    return run_once


def run_once(
    runtime_api_address: str,
    token: str,
    insecure: bool,
    certificates: bytes | None,
    on_started: Callable[[], None],
) -> int:
    """Run one ClientApp task as ``flwr-clientapp`` would. ``run_clientapp`` ends in Flower's
    ``flwr_exit`` (``SystemExit`` with the task's exit code), which Flower's worker loop passes
    on after telling the executor the code, so the process exits with it."""
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    on_started()  # the executor now knows the task started here, and will not start it cold
    run_clientapp(
        runtime_api_address=runtime_api_address, token=token, insecure=insecure,
        certificates=certificates,
        parent_pid=None,  # watched since start-up (fedcare.worker_template.watch_parent); a second
        # watcher's signal could cut into the exit handlers the first one started
        runtime_dependency_install=False,  # as the executor's cold starts: never at a site
    )  # fmt: skip
    return 0  # not reached: run_clientapp exits


if __name__ == "__main__":
    worker_main(TASK_NAME, preload)
