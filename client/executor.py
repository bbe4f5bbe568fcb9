"""The site's own app executor: runs a ClientApp only if the site approved its app bundle.

The SuperNode runs with ``--isolation process`` and a SuperExec secret; this process, holding
the same secret, is the only one its Runtime API hands ClientApp tasks to. It hands each approved
ClientApp task to the prestarted ClientApp worker it keeps ready (:mod:`fedcare.client.warm_worker`,
the token over a 0600 socket), so no process start sits on the round's critical path, or starts
it cold with its task token in a private file when no worker is ready (:mod:`fedcare.superexec`,
shared with the coordinator's ServerApp executor). An unapproved task is never launched: the
executor answers it at once, through the same Runtime API calls a ClientApp process makes, with
an error reply carrying only ``app-not-approved``, and the site's audit log records the refusal.
The coordinator's round goes on without the site, and the SuperNode is free for the next run (a
task left unanswered would hold it until Flower's token expired).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fedcare.superexec import (
    ExecutorSettings,
    OnRefused,
    fab_hash,
    fedcare_fab_hash,
    main,
    runtime_client,
)

if TYPE_CHECKING:
    from flwr.proto.task_pb2 import Task

__all__ = ["fab_hash", "fedcare_fab_hash"]  # where the site CLI and benchmarks import them

log = logging.getLogger("fedcare.site.executor")
# Approved ClientApp tasks go to a prestarted worker of this module, started before the task.
WORKER_MODULE = "fedcare.client.warm_worker"


def refuse_clientapp(settings: ExecutorSettings) -> OnRefused:
    """Record the refusal in the site's audit log, then answer the task."""
    from fedcare.client.audit import refusal_entry

    def refuse(task: Task, token: str) -> None:
        refusal_entry(settings.state_dir, str(task.run_id), task.fab_hash)
        _answer_refusal(settings, token)

    return refuse


def _answer_refusal(settings: ExecutorSettings, token: str) -> None:
    """Reply to the refused task with an ``app-not-approved`` error and close it, using the
    Runtime API calls of Flower's own ClientApp process (its task token, its helpers)."""
    from flwr.app import Error, Message
    from flwr.common.constant import SubStatus
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    from fedcare import messages as keys

    client = runtime_client(settings, RuntimeTokenHttpInterceptor(token))
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


def settings(
    runtime_api_address: str, secret_file: Path, state_dir: Path, approved: tuple[str, ...]
) -> ExecutorSettings:
    """The site executor's settings: ClientApp tasks over the SuperNode's loopback HTTP."""
    from flwr.supercore.constant import TaskType

    return ExecutorSettings(
        runtime_api_address=runtime_api_address, secret_file=secret_file, state_dir=state_dir,
        approved=frozenset(approved), task_type=TaskType.CLIENT_APP,
    )  # fmt: skip


if __name__ == "__main__":
    from flwr.supercore.constant import TaskType

    main(__doc__.splitlines()[0], TaskType.CLIENT_APP, refuse_clientapp, WORKER_MODULE)
