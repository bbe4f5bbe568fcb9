"""The coordinator's own app executor: runs a ServerApp only if its app bundle is approved.

The SuperLink runs with ``--isolation process`` and a SuperExec secret, so it launches no app
itself; this process, holding the same secret, is the only one its Runtime API hands ServerApp
tasks to (:mod:`fedcare.superexec`, shared with the sites' executors). By default only the
installed fedcare version's own bundle is approved: whoever can reach the Control API (a local
user running ``flwr run ./app``) cannot make the coordinator host run code of their own. The
operator approves extra bundles with ``coordinator start --approve-app``.

An unapproved ServerApp task is never launched; the executor closes it at once as failed
(``app-not-approved``), as a ServerApp process that raised would, so ``flwr ls`` shows the run
``finished:failed`` and ``coordinator run`` reports it instead of waiting.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fedcare.superexec import ExecutorSettings, OnRefused, main, runtime_client

if TYPE_CHECKING:
    from flwr.proto.task_pb2 import Task

log = logging.getLogger("fedcare.coordinator.executor")

REFUSED_DETAILS = "app-not-approved: this coordinator runs only approved app bundles (FAB {})"


def refuse_serverapp(settings: ExecutorSettings) -> OnRefused:
    """Close a refused ServerApp task as failed, with the Runtime API calls of Flower's own
    ServerApp process (its task token; pull the input, push a failed output)."""

    def refuse(task: Task, token: str) -> None:
        from flwr.common.constant import SubStatus
        from flwr.proto.runtime_pb2 import PullTaskInputRequest, PushTaskOutputRequest
        from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor

        client = runtime_client(settings, RuntimeTokenHttpInterceptor(token))
        try:
            task_input = client.PullTaskInput(PullTaskInputRequest())
            client.PushTaskOutput(
                PushTaskOutputRequest(
                    context=task_input.context, sub_status=SubStatus.FAILED,
                    details=REFUSED_DETAILS.format(task.fab_hash),
                )
            )  # fmt: skip
        except Exception:  # the refusal stands either way; Flower's expiry is the fallback
            log.exception("could not close the refused task; it will expire instead")
        finally:
            client.close()

    return refuse


def settings(
    runtime_api_address: str,
    secret_file: Path,
    state_dir: Path,
    approved: tuple[str, ...],
    root_certificates: Path,
) -> ExecutorSettings:
    """The coordinator executor's settings: ServerApp tasks over the SuperLink's TLS port."""
    from flwr.supercore.constant import TaskType

    return ExecutorSettings(
        runtime_api_address=runtime_api_address, secret_file=secret_file, state_dir=state_dir,
        approved=frozenset(approved), task_type=TaskType.SERVER_APP,
        root_certificates=root_certificates,
    )  # fmt: skip


if __name__ == "__main__":
    from flwr.supercore.constant import TaskType

    main(__doc__.splitlines()[0], TaskType.SERVER_APP, refuse_serverapp)
