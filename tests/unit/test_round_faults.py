"""A round goes on without the sites that did not answer, and the round log says who was missing
and why (issue #12): ``timeout`` (asked, no reply in time), ``refused: <reason>``, ``failed:``.

The real ServerApp pieces and three hospitals' real ClientApps in one process
(:mod:`tests.inprocess_federation`); a grid that loses one site's replies stands for a site whose
daemon died or whose network dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

from fedcare.client.app import build_client_app
from fedcare.config import RunConfig, StrategyName
from fedcare.server.app import request_config
from fedcare.server.round_loop import run_rounds
from fedcare.server.strategies import build_strategy
from fedcare.server.tracking import RoundRecord, SiteTracking
from fedcare.server.validation import UpdateRules
from fedcare.tasks import get_task
from fedcare.weights import to_record
from tests.inprocess_federation import InProcessGrid, Node, site_node_config

SITES = {1: "cleveland", 2: "hungarian", 3: "va"}
PLAIN = RunConfig(rounds=3, strategy=StrategyName.FEDAVG)


class LossyGrid(InProcessGrid):
    """Delivers every request, but loses the train replies of ``silent`` in ``lost_rounds``
    (the site trained; its reply never arrived). ``flower_error``: as Flower's SuperLink does
    when a node went offline, answer in its place with Flower's own error message (node
    ``SUPERLINK_NODE_ID``, in reply to the request), instead of nothing."""

    def __init__(
        self, nodes: dict[int, Node], silent: int, lost_rounds: set[int], flower_error: bool
    ) -> None:
        super().__init__(nodes)
        self.silent, self.lost_rounds, self.flower_error = silent, lost_rounds, flower_error
        self.train_exchanges = 0

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        for message in messages:  # what pushing does to a message in Flower's grids
            message.metadata.__dict__["_message_id"] = message.object_id
        replies = list(super().send_and_receive(messages, timeout=timeout))
        if any(m.metadata.message_type == MessageType.TRAIN for m in messages):
            self.train_exchanges += 1
            if self.train_exchanges in self.lost_rounds:
                replies = [r for r in replies if r.metadata.src_node_id != self.silent]
                if self.flower_error:
                    lost = next(m for m in messages if m.metadata.dst_node_id == self.silent)
                    replies.append(
                        create_message_error_unavailable_res_message(lost.metadata, "node")
                    )
        return replies


def _run(
    folder: Path,
    site_paths: dict[str, Path],
    policies: dict[str, dict[str, str]],
    flower_error: bool = False,
    min_sites: int | None = None,
) -> list[dict[str, Any]]:
    nodes = {
        node_id: Node(
            build_client_app(),
            site_node_config(name, site_paths[name], folder / name, **policies[name]),
        )
        for node_id, name in SITES.items()
    }
    grid = LossyGrid(nodes, silent=2, lost_rounds={2}, flower_error=flower_error)
    history: list[RoundRecord] = []
    rules = UpdateRules(PLAIN.max_update_norm, PLAIN.weighting, dp=PLAIN.dp)
    strategy = SiteTracking(build_strategy(PLAIN, 2), history.append, rules, min_sites=min_sites)
    model = get_task(PLAIN.task).build_model(PLAIN.model, seed=PLAIN.seed)
    config = ConfigRecord(request_config(PLAIN))
    run_rounds(strategy, grid, to_record(model), PLAIN.rounds, config, config, 5.0, fold=True)
    return [r.to_json() for r in history]


def test_the_round_log_names_who_was_missing_and_why(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: VA requires DP (it refuses this plain run); Hungary's round-2 reply is lost.
    policies = {name: {"require-dp": "false"} for name in SITES.values()}
    policies["va"] = {"require-dp": "true"}

    # Execute
    records = _run(tmp_path, site_paths, policies)

    # Assert: round 2 went on with Cleveland alone and says Hungary timed out; VA's refusal is
    # "refused" every round; and every round still has every site's evaluation.
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    assert records[1]["missing"] == {"va": "refused: dp-required"}
    assert records[2]["missing"] == {"hungarian": "timeout", "va": "refused: dp-required"}
    assert records[3]["missing"] == {"va": "refused: dp-required"}
    assert set(records[2]["train_loss"]) == {"cleveland"}
    assert set(records[3]["train_loss"]) == {"cleveland", "hungarian"}  # it rejoined
    for record in records:
        assert set(record["sites"]) == set(SITES.values())


def test_flowers_stand_in_error_for_an_offline_site_is_that_site_missing_not_a_reply(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: Hungary goes offline in round 2; Flower's SuperLink answers for it.
    policies = {name: {"require-dp": "false"} for name in SITES.values()}

    # Execute
    records = _run(tmp_path, site_paths, policies, flower_error=True)

    # Assert: recorded as Hungary offline - not as a rejected reply from an unknown node 1.
    assert records[2]["missing"] == {"hungarian": "offline"}
    assert records[2]["rejected"] == {} and records[2]["refused"] == {}
    assert set(records[2]["train_loss"]) == {"cleveland", "va"}
    assert records[1]["missing"] == {} and records[3]["missing"] == {}


def test_a_round_with_fewer_than_min_sites_updates_keeps_the_global_model(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: all three sites must send an update; Hungary's round-2 reply is lost.
    policies = {name: {"require-dp": "false"} for name in SITES.values()}

    # Execute
    records = _run(tmp_path, site_paths, policies, min_sites=3)

    # Assert: round 2 did not move the model (its evaluation is round 1's, site by site), and
    # says so; rounds 1 and 3 did.
    assert [r["updated"] for r in records] == [True, True, False, True]
    assert records[2]["missing"] == {"hungarian": "timeout"}
    assert records[2]["sites"] == records[1]["sites"]
    assert records[3]["sites"] != records[2]["sites"]
