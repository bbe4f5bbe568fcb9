"""The real ServerApp and real ClientApps in one process, without Ray or a SuperLink.

A :class:`InProcessGrid` hands each message to the ClientApp of its destination node with that
node's context, exactly as a SuperNode would, and returns the reply with the node's id as its
source - the id Flower's SuperLink authenticates. Node ids are chosen here, so a test can write
them into a coordinator registry (``sites.json``) and play a site that lies about its name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedcare.client.app import build_client_app
from fedcare.config import RunConfig
from fedcare.server.app import main as server_main

Tamper = Callable[[Message], Message]


@dataclass
class Node:
    """One simulated SuperNode: its ClientApp, node config, and an optional reply tamperer."""

    app: ClientApp
    node_config: dict[str, Any]
    tamper: Tamper | None = None


def _unused() -> TypeError:
    """Grid methods the fedcare ServerApp never calls (it uses send_and_receive and
    get_node_ids only); reaching one means the ServerApp changed and this harness must too."""
    return TypeError("InProcessGrid delivers through send_and_receive only")


class InProcessGrid(Grid):
    """Delivers every message synchronously to the destination node's ClientApp."""

    def __init__(self, nodes: dict[int, Node], run_id: int = 7) -> None:
        self.nodes = nodes
        self.run_id = run_id
        self._contexts = {
            node_id: Context(
                run_id=run_id, node_id=node_id, node_config=node.node_config,
                state=RecordDict(), run_config={},
            )
            for node_id, node in nodes.items()
        }  # fmt: skip
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = run_id, 1, 0

    def set_run(self, run: Run) -> None:
        pass

    @property
    def run(self) -> Run:
        raise _unused()

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise _unused()

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise _unused()

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise _unused()

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for message in messages:
            node = self.nodes[message.metadata.dst_node_id]
            reply = node.app(message, self._contexts[message.metadata.dst_node_id])
            replies.append(node.tamper(reply) if node.tamper else reply)
        return replies


def run_server(
    grid: InProcessGrid, config: RunConfig, out_dir: Path, **runtime: Any
) -> list[dict[str, Any]]:
    """Run the real ServerApp's main loop over ``grid``; returns the rounds.json it wrote."""
    run_config = config.to_run_config() | {
        "out-dir": str(out_dir),
        "min-sites": len(grid.nodes),
        **runtime,
    }
    context = Context(
        run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    server_main(grid, context)
    rounds: list[dict[str, Any]] = json.loads((out_dir / "rounds.json").read_text())
    return rounds


def site_node_config(
    name: str, data: Path, state: Path, key: Path | None = None, **policy: Any
) -> dict[str, Any]:
    """What ``fedcare site start`` gives a SuperNode (the key only where there is one)."""
    node = {"site-name": name, "data-path": str(data), "state-dir": str(state), **policy}
    if key is not None:
        node["site-key"] = str(key)
    return node


def site_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """A site key pair as ``fedcare site keygen`` makes it (EC P-384, OpenSSH)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    folder.mkdir(parents=True, exist_ok=True)
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public


def registered_federation(
    root: Path,
    sites: dict[int, str],
    site_paths: dict[str, Path],
    claims: dict[int, str] | None = None,
    **policy: Any,
) -> tuple[dict[int, Node], Path]:
    """Sites with keys (``root/keys``) and state (``root/state/NAME``), registered by node id
    in a coordinator's ``root/coordinator/sites.json``; node ``n`` may claim ``claims[n]``."""
    registry: dict[str, dict[str, Any]] = {}
    nodes: dict[int, Node] = {}
    for node_id, name in sites.items():
        private, public = site_keys(root / "keys", name)
        registry[name] = {"public_key": str(public), "node_id": str(node_id)}
        claimed = (claims or {}).get(node_id, name)
        config = site_node_config(
            claimed, site_paths[name], root / "state" / name, key=private, **policy
        )
        nodes[node_id] = Node(build_client_app(), config)
    (root / "coordinator").mkdir(parents=True, exist_ok=True)
    (root / "coordinator" / "sites.json").write_text(json.dumps(registry))
    return nodes, root / "coordinator" / "sites.json"
