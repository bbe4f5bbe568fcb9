"""A strategy wrapper that records what each site did every round, and screens updates.

Wraps rather than subclasses, so it works around any of Flower's strategies unchanged; the
inner strategy still does all aggregation. Before it does, every update passes the
:class:`~fedcare.server.validation.UpdateRules`; a rejected one is recorded with its reason and
left out, so a bad site costs the round one participant, never the model.
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
from fedcare.server.validation import UpdateRules

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
    rejected: dict[str, str] = field(default_factory=dict)  # site -> why its update was dropped
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
            "rejected": dict(sorted(self.rejected.items())),
            "finished_at": self.finished_at,
        }


def _metrics(reply: Message) -> MetricRecord | None:
    if reply.has_error() or keys.METRICS not in reply.content.metric_records:
        return None
    return reply.content.metric_records[keys.METRICS]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class SiteTracking(Strategy):
    """Delegates to ``inner``; reports a :class:`RoundRecord` after each evaluation."""

    def __init__(
        self,
        inner: Strategy,
        on_round: Callable[[RoundRecord], None],
        rules: UpdateRules | None = None,
    ) -> None:
        self.inner = inner
        self.on_round = on_round
        self.rules = rules
        self._global: ArrayRecord | None = None  # this round's model, the updates' reference
        self._train_loss: dict[str, float] = {}
        self._epsilon: dict[str, float] = {}
        self._refused: dict[str, str] = {}
        self._rejected: dict[str, str] = {}
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
        self._global = arrays
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self._train_loss, self._epsilon, self._refused, self._rejected = {}, {}, {}, {}
        accepted: list[Message] = []
        for reply in replies:
            name = self.site_name(reply)
            if reply.has_error():
                reason = reply.error.reason or ""
                known = reason in keys.REFUSAL_CODES
                self._refused[name] = reason if known else f"error {reply.error.code}"
                log.warning("round %d: site %s sent no update (%s)", server_round, name, reason)
                continue
            metrics = _metrics(reply)
            if metrics is not None and _is_number(metrics.get(keys.EPSILON)):
                self._epsilon[name] = float(metrics[keys.EPSILON])  # type: ignore[arg-type]
            rejection = self._screen(reply)
            if rejection is not None:
                self._rejected[name] = rejection
                log.warning("round %d: rejected %s's update: %s", server_round, name, rejection)
                continue
            if metrics is not None and _is_number(metrics.get(keys.TRAIN_LOSS)):
                self._train_loss[name] = float(metrics[keys.TRAIN_LOSS])  # type: ignore[arg-type]
            accepted.append(reply)
        return self.inner.aggregate_train(server_round, accepted)

    def _screen(self, reply: Message) -> str | None:
        if self.rules is None or self._global is None:
            return None
        try:
            return self.rules.check(reply.content, self._global)
        except Exception as exc:  # a malformed reply is the site's fault, never a crash here
            return f"malformed reply ({type(exc).__name__})"

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
            values = [metrics.get(k) for k in (keys.EVAL_LOSS, keys.EVAL_ACCURACY, keys.EVAL_AUROC)]
            if not all(_is_number(v) for v in values):
                log.warning("round %d: ignored a malformed evaluation from %s", server_round,
                            self.site_name(reply))  # fmt: skip
                continue
            loss, accuracy, auroc = (float(v) for v in values)  # type: ignore[arg-type]
            sites[self.site_name(reply)] = SiteEvaluation(
                loss=loss, accuracy=accuracy, auroc=None if math.isnan(auroc) else auroc
            )
        record = RoundRecord(
            round=server_round,
            sites=sites,
            train_loss=self._train_loss,
            epsilon=self._epsilon,
            refused=self._refused,
            rejected=self._rejected,
        )
        self._train_loss, self._epsilon, self._refused, self._rejected = {}, {}, {}, {}
        self.on_round(record)
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()
