"""One exchange per round (issue #11): each site's evaluation of a global model travels with its
next training (:mod:`fedcare.server.round_loop`), and nothing the coordinator records changes.

The real ServerApp pieces (strategy, :class:`SiteTracking`, update rules) and the real ClientApps
of three hospitals run in one process (:mod:`tests.inprocess_federation`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ConfigRecord, Message, MessageType

from fedcare import messages as keys
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


class CountingGrid(InProcessGrid):
    """Keeps, per exchange, which node got which kind of message and what it was asked."""

    def __init__(self, nodes: dict[int, Node]) -> None:
        super().__init__(nodes)
        self.exchanges: list[list[tuple[int, str, bool]]] = []

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self.exchanges.append(
            [
                (
                    m.metadata.dst_node_id,
                    m.metadata.message_type,
                    bool(m.content.config_records[keys.CONFIG].get(keys.EVALUATE_FIRST, False)),
                )
                for m in messages
            ]
        )
        return super().send_and_receive(messages, timeout=timeout)


def flat(value: object, path: str = "") -> dict[str, object]:
    """Every leaf of nested dicts and lists by its path, so numbers compare with a tolerance."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{path}/{i}").items()}
    return {path: value}


def run(
    folder: Path, site_paths: dict[str, Path], fold: bool, policies: dict[str, dict[str, str]]
) -> tuple[list[dict[str, Any]], CountingGrid]:
    """The ServerApp's round loop over three in-process sites; the round records it made."""
    nodes = {
        node_id: Node(
            build_client_app(),
            site_node_config(name, site_paths[name], folder / name, **policies[name]),
        )
        for node_id, name in SITES.items()
    }
    grid = CountingGrid(nodes)
    history: list[RoundRecord] = []
    rules = UpdateRules(PLAIN.max_update_norm, PLAIN.weighting, dp=PLAIN.dp)
    strategy = SiteTracking(build_strategy(PLAIN, len(SITES)), history.append, rules)
    model = get_task(PLAIN.task).build_model(PLAIN.model, seed=PLAIN.seed)
    config = ConfigRecord(request_config(PLAIN))
    run_rounds(strategy, grid, to_record(model), PLAIN.rounds, config, config, 60.0, fold=fold)
    records = [{k: v for k, v in r.to_json().items() if k != "finished_at"} for r in history]
    return records, grid


def test_folded_evaluations_record_exactly_what_separate_evaluate_exchanges_record(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: three sites that train without DP, run once each way from the same seed.
    plain = {name: {"require-dp": "false"} for name in SITES.values()}

    # Execute
    folded, folded_grid = run(tmp_path / "folded", site_paths, True, plain)
    separate, separate_grid = run(tmp_path / "separate", site_paths, False, plain)

    # Assert: R + 1 exchanges instead of 2R + 1, every train request asks for the evaluation,
    # and the records (every site's evaluation of every round's model) are identical.
    assert len(folded_grid.exchanges) == PLAIN.rounds + 1
    assert len(separate_grid.exchanges) == 2 * PLAIN.rounds + 1
    for exchange in folded_grid.exchanges[:-1]:
        assert sorted(exchange) == [(n, MessageType.TRAIN, True) for n in SITES]
    assert sorted(folded_grid.exchanges[-1]) == [(n, MessageType.EVALUATE, False) for n in SITES]
    assert [r["round"] for r in folded] == list(range(PLAIN.rounds + 1))
    for record in folded:
        assert set(record["sites"]) == set(SITES.values())
    assert flat(folded) == pytest.approx(flat(separate), rel=1e-5)  # float32 training


def test_a_site_that_refuses_training_is_still_evaluated_every_round(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: VA requires DP, so it refuses every round of this plain run.
    policies = {name: {"require-dp": "false"} for name in SITES.values()}
    policies["va"] = {"require-dp": "true"}

    # Execute
    records, grid = run(tmp_path, site_paths, True, policies)

    # Assert: VA's refusal is recorded each round, and its evaluation of each round's model
    # is asked for in a separate exchange - VA alone - and recorded.
    for record in records:
        assert set(record["sites"]) == set(SITES.values())
    for record in records[1:]:
        assert record["refused"] == {"va": keys.REFUSED_DP_REQUIRED}
    evaluate_only = [e for e in grid.exchanges if {t for _, t, _ in e} == {MessageType.EVALUATE}]
    assert evaluate_only[:-1] == [[(3, MessageType.EVALUATE, False)]] * PLAIN.rounds
    assert sorted(evaluate_only[-1]) == [(n, MessageType.EVALUATE, False) for n in SITES]
