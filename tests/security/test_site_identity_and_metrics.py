"""Issue #20, finding 4: the coordinator keeps running and knows who spoke.

Attacks: a site sends a NaN (or out-of-range) metric, which used to kill the ServerApp while it
wrote its round log; a site replies under another hospital's name, which used to be recorded
under that name. Each test runs the real ServerApp loop with the real ClientApps
(:mod:`tests.inprocess_federation`); a site's reply is altered after its ClientApp built it, as
a site that changed its own code would.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from flwr.app import Message, MessageType

from fedcare.client.app import build_client_app
from fedcare.config import RunConfig, StrategyName
from tests.inprocess_federation import (
    InProcessGrid,
    Node,
    registered_federation,
    run_server,
    site_node_config,
)

SITES = {1: "cleveland", 2: "hungarian", 3: "va"}
PLAIN = RunConfig(rounds=1, strategy=StrategyName.FEDAVG)
NON_DP = {"require-dp": "false"}


def set_metric(message_type: str, name: str, value: float):
    """Set ``name`` in every reply that carries it: an evaluation metric travels in evaluate
    replies and, folded, in train replies (fedcare.server.round_loop)."""

    def tamper(reply: Message) -> Message:
        if reply.has_error():
            return reply
        metrics = reply.content.metric_records["metrics"]
        if reply.metadata.message_type == message_type or name in metrics:
            metrics[name] = value
        return reply

    return tamper


def test_a_nan_metric_is_rejected_with_the_site_named_and_the_run_goes_on(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: Cleveland sends a NaN training loss, Hungary a NaN accuracy.
    nodes = {
        node_id: Node(
            build_client_app(), site_node_config(name, site_paths[name], tmp_path / name, **NON_DP)
        )
        for node_id, name in SITES.items()
    }
    nodes[1].tamper = set_metric(MessageType.TRAIN, "train-loss", math.nan)
    nodes[2].tamper = set_metric(MessageType.EVALUATE, "eval-accuracy", math.nan)

    # Execute
    rounds = run_server(InProcessGrid(nodes), PLAIN, tmp_path / "run")

    # Assert: the run finished, each bad reply is rejected and named, the others count.
    assert [r["round"] for r in rounds] == [0, 1]
    assert "eval-accuracy" in rounds[0]["rejected"]["hungarian"]
    assert set(rounds[0]["sites"]) == {"cleveland", "va"}
    assert "train-loss" in rounds[1]["rejected"]["cleveland"]
    assert "cleveland" not in rounds[1]["train_loss"]
    json.loads((tmp_path / "run" / "rounds.json").read_text(), parse_constant=pytest.fail)


@pytest.mark.parametrize(
    ("message_type", "metric", "value"),
    [
        (MessageType.EVALUATE, "eval-accuracy", 1.5),
        (MessageType.EVALUATE, "eval-loss", -0.1),
        (MessageType.TRAIN, "train-loss", math.inf),
    ],
)
def test_an_out_of_range_metric_is_rejected_with_the_site_named(
    message_type: str, metric: str, value: float, tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    nodes = {
        node_id: Node(
            build_client_app(), site_node_config(name, site_paths[name], tmp_path / name, **NON_DP)
        )
        for node_id, name in SITES.items()
    }
    nodes[3].tamper = set_metric(message_type, metric, value)

    rounds = run_server(InProcessGrid(nodes), PLAIN, tmp_path / "run")

    assert [r["round"] for r in rounds] == [0, 1]
    last = rounds[1 if message_type == MessageType.TRAIN else 0]
    assert metric in last["rejected"]["va"]
    assert "va" not in (last["train_loss"] if message_type == MessageType.TRAIN else last["sites"])


def test_a_reply_claiming_another_sites_name_is_refused_and_logged(
    tmp_path: Path, site_paths: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: node 1 is registered as Cleveland but its ClientApp says it is Hungary.
    nodes, registry = registered_federation(
        tmp_path, SITES, site_paths, claims={1: "hungarian"}, **NON_DP
    )

    # Execute
    with caplog.at_level(logging.WARNING):
        rounds = run_server(
            InProcessGrid(nodes), PLAIN, tmp_path / "run", **{"site-registry": str(registry)}
        )

    # Assert: its replies are Cleveland's, refused; Hungary's own evaluation stands.
    for record in rounds:
        assert "claims to be site 'hungarian'" in record["rejected"]["cleveland"]
        assert set(record["sites"]) == {"hungarian", "va"}
    assert "cleveland" not in rounds[1]["train_loss"]
    assert "hungarian" not in rounds[1]["rejected"]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cleveland" in m and "claims to be site 'hungarian'" in m for m in logged), logged


def test_a_reply_from_an_unregistered_node_is_refused(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    nodes, registry = registered_federation(tmp_path, SITES, site_paths, **NON_DP)
    registered = json.loads(registry.read_text())
    del registered["va"]["node_id"]  # va's key was never registered with the SuperLink
    registry.write_text(json.dumps(registered))

    rounds = run_server(
        InProcessGrid(nodes), PLAIN, tmp_path / "run", **{"site-registry": str(registry)}
    )

    for record in rounds:
        assert "unregistered node 3" in record["rejected"]["node-3"]
        assert set(record["sites"]) == {"cleveland", "hungarian"}
