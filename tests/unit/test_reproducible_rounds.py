"""The same seed gives the same model, whatever order the sites' replies arrive in: the
coordinator aggregates in site-name order (floating-point sums depend on their order, and in a
real federation or Flower's simulation the order of arrival is a race)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message

from fedcare.client.app import build_client_app
from fedcare.config import RunConfig, StrategyName
from fedcare.server.app import request_config
from fedcare.server.round_loop import run_rounds
from fedcare.server.strategies import build_strategy
from fedcare.server.tracking import SiteTracking
from fedcare.server.validation import UpdateRules
from fedcare.tasks import get_task
from fedcare.weights import to_record
from tests.inprocess_federation import InProcessGrid, Node, site_node_config

SITES = {1: "cleveland", 2: "hungarian", 3: "va"}


class OrderedGrid(InProcessGrid):
    """Returns each exchange's replies in the order ``arrival`` gives (by node id)."""

    def __init__(self, nodes: dict[int, Node], arrival: tuple[int, ...]) -> None:
        super().__init__(nodes)
        self.arrival = arrival

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = list(super().send_and_receive(messages, timeout=timeout))
        return sorted(replies, key=lambda r: self.arrival.index(r.metadata.src_node_id))


def _final_weights(folder: Path, site_paths: dict[str, Path], arrival: tuple[int, ...]):
    config = RunConfig(rounds=3, strategy=StrategyName.FEDYOGI, local_epochs=2)
    nodes = {
        node: Node(
            build_client_app(),
            site_node_config(name, site_paths[name], folder / name, **{"require-dp": "false"}),
        )
        for node, name in SITES.items()
    }
    rules = UpdateRules(config.max_update_norm, config.weighting, dp=config.dp)
    strategy = SiteTracking(build_strategy(config, 3), lambda _: None, rules)
    model = get_task(config.task).build_model(config.model, seed=config.seed)
    record = ConfigRecord(request_config(config))
    final = run_rounds(
        strategy, OrderedGrid(nodes, arrival), to_record(model), config.rounds, record, record,
        5.0, fold=True,
    )  # fmt: skip
    return {name: array.numpy() for name, array in final.items()}


@pytest.mark.parametrize("arrival", [(3, 1, 2), (2, 3, 1)])
def test_the_final_model_does_not_depend_on_the_order_replies_arrive_in(
    tmp_path: Path, site_paths: dict[str, Path], arrival: tuple[int, ...]
) -> None:
    reference = _final_weights(tmp_path / "in-order", site_paths, (1, 2, 3))
    shuffled = _final_weights(tmp_path / "shuffled", site_paths, arrival)
    assert reference.keys() == shuffled.keys()
    for name in reference:
        assert np.array_equal(reference[name], shuffled[name]), name
