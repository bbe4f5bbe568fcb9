"""A strategy wrapper that records each site's evaluation every round.

Wraps rather than subclasses, so it works around any of Flower's strategies unchanged; the
inner strategy still does all aggregation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcare import messages as keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteEvaluation:
    """One site's metrics of the global model in one round."""

    loss: float
    accuracy: float
    auroc: float | None


@dataclass(frozen=True)
class RoundRecord:
    """What the coordinator learned in one round (round 0 = the initial model)."""

    round: int
    sites: dict[str, SiteEvaluation]
    train_loss: dict[str, float] = field(default_factory=dict)
    epsilon: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # site -> allow-listed reason
    finished_at: float = field(default_factory=time.time)  # wall clock, for per-round timing

    @property
    def mean_accuracy(self) -> float:
        values = [s.accuracy for s in self.sites.values()]
        return sum(values) / len(values) if values else math.nan

    def to_json(self) -> dict[str, object]:
        return {
            "round": self.round,
            "mean_accuracy": self.mean_accuracy,
            "sites": {
                name: {"accuracy": s.accuracy, "auroc": s.auroc, "loss": s.loss}
                for name, s in sorted(self.sites.items())
            },
            "train_loss": dict(sorted(self.train_loss.items())),
            "epsilon": dict(sorted(self.epsilon.items())),
            "refused": dict(sorted(self.refused.items())),
            "finished_at": self.finished_at,
        }


def _metrics(reply: Message) -> MetricRecord | None:
    if reply.has_error() or keys.METRICS not in reply.content.metric_records:
        return None
    return reply.content.metric_records[keys.METRICS]


class SiteTracking(Strategy):
    """Delegates to ``inner``; reports a :class:`RoundRecord` after each evaluation."""

    def __init__(self, inner: Strategy, on_round: Callable[[RoundRecord], None]) -> None:
        self.inner = inner
        self.on_round = on_round
        self._train_loss: dict[str, float] = {}
        self._epsilon: dict[str, float] = {}
        self._refused: dict[str, str] = {}
        self._names: dict[int, str] = {}  # node id -> site name, learned from replies

    def site_name(self, reply: Message) -> str:
        """The replying site's declared name (remembered per node), else its node id."""
        node = reply.metadata.src_node_id
        if not reply.has_error() and keys.SITE in reply.content.config_records:
            self._names[node] = str(reply.content.config_records[keys.SITE][keys.SITE_NAME])
        return self._names.get(node, f"node-{node}")

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self._train_loss, self._epsilon, self._refused = {}, {}, {}
        for reply in replies:
            name = self.site_name(reply)
            if reply.has_error():
                reason = reply.error.reason or ""
                known = reason in keys.REFUSAL_CODES
                self._refused[name] = reason if known else f"error {reply.error.code}"
                log.warning("round %d: site %s sent no update (%s)", server_round, name, reason)
                continue
            metrics = _metrics(reply)
            if metrics is None:
                continue
            if keys.TRAIN_LOSS in metrics:
                self._train_loss[name] = float(metrics[keys.TRAIN_LOSS])  # type: ignore[arg-type]
            if keys.EPSILON in metrics:
                self._epsilon[name] = float(metrics[keys.EPSILON])  # type: ignore[arg-type]
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        replies = list(replies)
        sites: dict[str, SiteEvaluation] = {}
        for reply in replies:
            metrics = _metrics(reply)
            if metrics is None:
                continue
            auroc = float(metrics[keys.EVAL_AUROC])  # type: ignore[arg-type]
            sites[self.site_name(reply)] = SiteEvaluation(
                loss=float(metrics[keys.EVAL_LOSS]),  # type: ignore[arg-type]
                accuracy=float(metrics[keys.EVAL_ACCURACY]),  # type: ignore[arg-type]
                auroc=None if math.isnan(auroc) else auroc,
            )
        record = RoundRecord(
            round=server_round,
            sites=sites,
            train_loss=self._train_loss,
            epsilon=self._epsilon,
            refused=self._refused,
        )
        self._train_loss, self._epsilon, self._refused = {}, {}, {}
        self.on_round(record)
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()
