"""The coordinator's side of SecAgg+: a Grid whose train exchange runs Flower's protocol.

The round loop and the strategy stay exactly as in plain mode (one ServerApp code path): the
strategy's train messages go to :class:`SecureAggregationGrid`, which runs the four stages of
Flower's ``SecAggPlusWorkflow`` (setup, share keys, collect masked vectors, unmask) instead of a
single exchange. Flower's workflow unmasks only the weighted mean of the sites' clipped updates;
each site's reply then reaches the strategy with that same mean applied to the global model in
place of its own weights - what Flower's legacy SecAgg+ path does for legacy strategies - so
FedAvg, FedAdam or FedYogi aggregate the secure mean, and each site's allow-listed metrics
(sent in the clear, as in plain mode) are still recorded per site.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from fedcare import messages as keys
from fedcare.privacy.secure_aggregation import SecAggSettings, apply_mean_update
from fedcare.server.grids import ForwardingGrid

log = logging.getLogger(__name__)


class _RecordingGrid(ForwardingGrid):
    """Keeps the replies of the latest exchange and each site's first error of the round (the
    protocol stages keep neither)."""

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner)
        self.last_replies: list[Message] = []
        self.errors: dict[int, Message] = {}

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        self.last_replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        for reply in self.last_replies:
            if reply.has_error():
                self.errors.setdefault(reply.metadata.src_node_id, reply)
        return self.last_replies


class _MeanOnly(LegacyStrategy):
    """The legacy strategy Flower's workflow calls: it selects the round's sites and keeps the
    unmasked mean. All real aggregation stays with the run's Message-API strategy."""

    def __init__(self, node_ids: list[int], grid: Grid) -> None:
        self.node_ids = node_ids
        self.grid = grid
        self.mean: list[np.ndarray] | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        empty = Parameters(tensors=[], tensor_type="")  # the real content is the strategy's
        run_id = self.grid.run.run_id
        return [(GridClientProxy(n, self.grid, run_id), FitIns(empty, {})) for n in self.node_ids]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results:
            return None, {}
        parameters = results[0][1].parameters  # Flower set every result to the unmasked mean
        self.mean = parameters_to_ndarrays(parameters)
        return parameters, {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return None


class SecureAggregationGrid(ForwardingGrid):
    """Runs every train exchange through SecAgg+ (see module docstring); the rest is forwarded."""

    def __init__(self, inner: Grid, context: Context, settings: SecAggSettings) -> None:
        super().__init__(inner)
        self.context = context
        self.settings = settings

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        if not messages or any(m.metadata.message_type != MessageType.TRAIN for m in messages):
            return self.inner.send_and_receive(messages, timeout=timeout)
        return self._secure_round(messages, timeout)

    def _secure_round(self, messages: list[Message], timeout: float | None) -> list[Message]:
        config = messages[0].content.config_records[keys.CONFIG]
        server_round = int(cast(int, config.get(keys.SERVER_ROUND, 0)))
        global_arrays = messages[0].content.array_records[keys.ARRAYS]
        sampler = _MeanOnly([m.metadata.dst_node_id for m in messages], self.inner)
        legacy = LegacyContext(
            Context(
                run_id=self.context.run_id,
                node_id=self.context.node_id,
                node_config=self.context.node_config,
                state=RecordDict(),
                run_config=self.context.run_config,
            ),
            strategy=sampler,
        )
        legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {Key.CURRENT_ROUND: server_round}
        )
        legacy.state.array_records[MAIN_PARAMS_RECORD] = global_arrays
        workflow = SecAggPlusWorkflow(**self.settings.workflow_kwargs(), timeout=timeout)
        state = WorkflowState()
        grid = _RecordingGrid(self.inner)
        if not workflow.setup_stage(grid, legacy, state):
            return self._halted(server_round, "setup", grid)
        # Flower's setup filled in legacy FitIns; each site gets the strategy's own message
        # content, in a RecordDict of its own: the next stage adds per-site key shares to it.
        state.nid_to_fitins = {
            m.metadata.dst_node_id: RecordDict(dict(m.content.items())) for m in messages
        }
        if not workflow.share_keys_stage(grid, legacy, state):
            return self._halted(server_round, "share keys", grid)
        collected = workflow.collect_masked_vectors_stage(grid, legacy, state)
        contributors = [reply for reply in grid.last_replies if not reply.has_error()]
        unmasked = collected and workflow.unmask_stage(grid, legacy, state)
        if not unmasked or sampler.mean is None:
            return self._halted(server_round, "unmask", grid)
        included = {reply.metadata.src_node_id for reply in contributors}
        dropped = [e for node, e in grid.errors.items() if node not in included]
        log.info(
            "round %d: secure aggregation of %d site updates (%d dropped)",
            server_round, len(contributors), len(dropped),
        )  # fmt: skip
        new_global = apply_mean_update(global_arrays, sampler.mean)
        return [_with_arrays(r, new_global) for r in contributors] + dropped

    @staticmethod
    def _halted(server_round: int, stage: str, grid: _RecordingGrid) -> list[Message]:
        """Too few sites left to unmask: no update this round; the sites' errors are kept."""
        log.warning(
            "round %d: secure aggregation halted at %s (fewer sites than the threshold)",
            server_round, stage,
        )  # fmt: skip
        return list(grid.errors.values())


def _with_arrays(reply: Message, arrays: ArrayRecord) -> Message:
    """The site's reply as the strategy expects it: its metrics, and the secure mean applied."""
    content = RecordDict({keys.ARRAYS: arrays})
    if keys.METRICS in reply.content.metric_records:
        content[keys.METRICS] = reply.content.metric_records[keys.METRICS]
    for name in (keys.SITE, keys.LEDGER):
        if name in reply.content.config_records:
            content[name] = reply.content.config_records[name]
    reply.content = content
    return reply
