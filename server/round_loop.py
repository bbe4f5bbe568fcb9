"""The ServerApp's round loop: the order of Flower's ``Strategy.start``, with each site's
evaluation of a global model sent in the same exchange as its next training.

Why: in a deployment every exchange costs a task at every site and the wait for Flower's
SuperNode to pull it (it sleeps 3 s after an empty pull). Flower's loop makes two exchanges per
round: train, then evaluate the new global model. Here the train request of round ``r`` asks
each site (``evaluate-first``) to evaluate the weights it carries - the global model of round
``r - 1`` - before training on them, and to send that evaluation with its update. A run of R
rounds then takes R + 1 exchanges instead of 2R + 1, and records the same thing: every site's
evaluation of every round's global model (round 0 = the initial one).

Nothing is lost to the fold. A site whose train reply carries no evaluation (it refused the
round, failed, was not sampled for training, or runs a fedcare that does not fold) is asked in
a separate evaluate exchange, as Flower's loop would ask it; the last round's model is
evaluated in an exchange of its own. Under SecAgg+ the evaluation travels, in the clear like
the training metrics, in the reply that carries the site's masked update (stage 3 of 4), and
reaches the strategy with the site's other metrics
(:class:`~fedcare.server.secure_aggregation.SecureAggregationGrid`). ``fold=False`` runs
Flower's order (tests compare the two).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedcare import messages as keys
from fedcare.server.tracking import SiteTracking

log = logging.getLogger(__name__)


def carries_evaluation(reply: Message) -> bool:
    """Whether a train reply holds the evaluation its request asked for first."""
    if reply.has_error() or keys.METRICS not in reply.content.metric_records:
        return False
    return set(reply.content.metric_records[keys.METRICS]) >= keys.EVAL_METRICS


def run_rounds(
    strategy: SiteTracking,
    grid: Grid,
    initial: ArrayRecord,
    rounds: int,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    timeout: float,
    fold: bool,
    start_round: int = 1,
    on_aggregated: Callable[[int, ArrayRecord], None] | None = None,
) -> ArrayRecord:
    """Round 0 evaluation, then ``rounds`` rounds of train + evaluation; the final weights.

    ``start_round`` > 1 continues a resumed run: ``initial`` is then the global model of round
    ``start_round - 1``, whose evaluation is the first still to do. ``on_aggregated(r, arrays)``
    is called after each round's aggregation (the coordinator's checkpoint)."""
    arrays = initial
    if fold:
        train_config = ConfigRecord(dict(train_config) | {keys.EVALUATE_FIRST: True})
    else:
        _evaluate(strategy, grid, start_round - 1, arrays, evaluate_config, timeout, folded=[])
    for server_round in range(start_round, rounds + 1):
        log.info("round %d/%d: training", server_round, rounds)
        requests = strategy.configure_train(server_round, arrays, train_config, grid)
        replies = list(grid.send_and_receive(requests, timeout=timeout))
        if fold:  # these replies also evaluated the previous round's model
            folded = [reply for reply in replies if carries_evaluation(reply)]
            _evaluate(strategy, grid, server_round - 1, arrays, evaluate_config, timeout, folded)
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = aggregated
        if on_aggregated is not None:
            on_aggregated(server_round, arrays)
        if not fold:
            _evaluate(strategy, grid, server_round, arrays, evaluate_config, timeout, folded=[])
    if fold:
        _evaluate(strategy, grid, rounds, arrays, evaluate_config, timeout, folded=[])
    return arrays


def _evaluate(
    strategy: SiteTracking,
    grid: Grid,
    server_round: int,
    arrays: ArrayRecord,
    config: ConfigRecord,
    timeout: float,
    folded: list[Message],
) -> None:
    """Record every site's evaluation of ``arrays``: the ``folded`` ones it already sent, and
    one evaluate exchange with each site the strategy samples that did not."""
    answered = {reply.metadata.src_node_id for reply in folded}
    requests = strategy.configure_evaluate(server_round, arrays, config, grid)
    missing = [m for m in requests if m.metadata.dst_node_id not in answered]
    replies = list(grid.send_and_receive(missing, timeout=timeout)) if missing else []
    strategy.aggregate_evaluate(server_round, [*folded, *replies])
