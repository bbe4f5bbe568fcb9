"""Call the real ClientApp the way a SuperNode does, without a SuperLink.

Flower builds server-side messages only inside a task (its ``TaskIdentity``); this harness sets
one up, as Flower's own simulation does, so a test can hand the ClientApp a real Message.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcare.config import RunConfig
from fedcare.server.app import request_config
from fedcare.tasks import get_task


def train_message(config: RunConfig, server_round: int) -> Message:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 0
    model = get_task(config.task).build_model(config.model, seed=config.seed)
    record = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "config": ConfigRecord(request_config(config) | {"server-round": server_round}),
        }
    )
    return Message(record, dst_node_id=1, message_type=MessageType.TRAIN)


def site_context(site: str, data: Path, state: Path, **policy: str | float) -> Context:
    node = {"site-name": site, "data-path": str(data), "state-dir": str(state), **policy}
    return Context(run_id=7, node_id=1, node_config=node, state=RecordDict(), run_config={})
