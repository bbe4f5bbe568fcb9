"""A strategy wrapper that records what each site did every round, and screens replies.

Wraps rather than subclasses, so it works around any of Flower's strategies unchanged; the
inner strategy still does all aggregation. Before it does, every reply is screened, and a
rejected one is recorded with the site named and the reason, and left out, so a bad site costs
the round one participant, never the model - and never the coordinator: a NaN or out-of-range
metric is a rejection (:func:`~fedcare.server.validation.metric_problem`), not a crash.

Who spoke. In a deployment the ServerApp has the coordinator's registry
(:class:`~fedcare.server.site_registry.SiteRegistry`): a reply's site is the registered name of
the node id Flower authenticated, a reply from an unregistered node is rejected, and one whose
``site`` record claims another name is refused and logged with both names. Its signed ledger
head must also pass :class:`~fedcare.server.ledger_heads.LedgerHeads`. A simulation has no
registry because it has no authentication: every simulated site is the simulation's own code,
so a site's name is the one its ClientApp read from the node config the simulation set (sent in
its ``site`` record), remembered per node.

Then each train reply's update passes the :class:`~fedcare.server.validation.UpdateRules`. Under
SecAgg+ the update is already inside the secure sum when the wrapper sees the reply: a refusal
there is recorded and the site's evaluation dropped, but its masked share cannot be taken out.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcare import messages as keys
from fedcare.server.ledger_heads import LedgerHeads
from fedcare.server.site_registry import SiteRegistry
from fedcare.server.validation import UpdateRules, metric_problem

log = logging.getLogger(__name__)

# Refusal codes a site chooses to send (its policy, budget, load); the other codes are failures.
REFUSALS = frozenset(
    {
        keys.REFUSED_BUDGET, keys.REFUSED_DP_REQUIRED, keys.REFUSED_SECAGG_REQUIRED,
        keys.REFUSED_APP, keys.REFUSED_BUSY,
    }
)  # fmt: skip
# The metrics of a train reply that are about its training, not its folded evaluation.
TRAIN_ONLY = frozenset({keys.TRAIN_LOSS, keys.EPSILON})


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
    # site -> why no update of it went in: "timeout" (asked, no reply within the round's
    # timeout), "offline" (Flower reported its node gone, or a registered site was not
    # connected), "refused: <reason>" (a refusal code) or "failed: <reason>" (any other error)
    missing: dict[str, str] = field(default_factory=dict)
    # False: fewer than min-sites sites replied in time, so the global model was kept as it was
    updated: bool = True
    finished_at: float = field(default_factory=time.time)  # wall clock, for per-round timing

    @property
    def mean_accuracy(self) -> float:
        values = [s.accuracy for s in self.sites.values()]
        return sum(values) / len(values) if values else math.nan

    def to_json(self) -> dict[str, object]:
        return {
            "round": self.round,
            "mean_accuracy": None if math.isnan(self.mean_accuracy) else self.mean_accuracy,
            "sites": {
                name: {"accuracy": s.accuracy, "auroc": s.auroc, "loss": s.loss}
                for name, s in sorted(self.sites.items())
            },
            "train_loss": dict(sorted(self.train_loss.items())),
            "epsilon": dict(sorted(self.epsilon.items())),
            "refused": dict(sorted(self.refused.items())),
            "rejected": dict(sorted(self.rejected.items())),
            "missing": dict(sorted(self.missing.items())),
            "updated": self.updated,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> RoundRecord:
        """The record :meth:`to_json` wrote (a resumed run's history, from its checkpoint)."""
        return cls(
            round=int(payload["round"]),
            sites={
                name: SiteEvaluation(loss=s["loss"], accuracy=s["accuracy"], auroc=s["auroc"])
                for name, s in payload["sites"].items()
            },
            train_loss=dict(payload.get("train_loss", {})),
            epsilon=dict(payload.get("epsilon", {})),
            refused=dict(payload.get("refused", {})),
            rejected=dict(payload.get("rejected", {})),
            missing=dict(payload.get("missing", {})),
            updated=bool(payload.get("updated", True)),
            finished_at=float(payload["finished_at"]),
        )


def _metrics(reply: Message) -> MetricRecord | None:
    if reply.has_error() or keys.METRICS not in reply.content.metric_records:
        return None
    return reply.content.metric_records[keys.METRICS]


def _evaluation_view(reply: Message) -> Message:
    """``reply`` as an evaluate reply: its evaluation metrics and weight only. Flower's
    strategies aggregate evaluations only when every reply has the same metric names, and a
    train reply that carries a folded evaluation also has its training's."""
    metrics = _metrics(reply)
    if reply.metadata.message_type != MessageType.TRAIN or metrics is None:
        return reply
    view = copy.copy(reply)  # the reply itself still goes to aggregate_train
    kept = {k: v for k, v in metrics.items() if k in keys.EVAL_METRICS or k == keys.WEIGHT}
    view.content = RecordDict({keys.METRICS: MetricRecord(kept)})
    return view


def _claimed_name(reply: Message) -> str | None:
    if reply.has_error() or keys.SITE not in reply.content.config_records:
        return None
    return str(reply.content.config_records[keys.SITE].get(keys.SITE_NAME))


class SiteNames:
    """Who sent a reply: the registered name of its authenticated node in a deployment; in a
    simulation (``registry`` None) the name the site's replies give (see module docstring)."""

    def __init__(self, registry: SiteRegistry | None) -> None:
        self.registry = registry
        self._names: dict[int, str] = {}  # simulation only: node id -> name its replies sent

    def name_of(self, node: int) -> str:
        """The site ``node`` is (registered, or seen in its replies), or ``node-N``."""
        if self.registry is not None:
            return str(self.registry.names.get(node, f"node-{node}"))
        return self._names.get(node, f"node-{node}")

    def identify(self, reply: Message) -> tuple[str, str | None]:
        """The replying site's name, and why the reply must be refused for who sent it."""
        node = reply.metadata.src_node_id
        claimed = _claimed_name(reply)
        if self.registry is None:
            if claimed is not None:
                self._names[node] = claimed
            return self._names.get(node, f"node-{node}"), None
        name = self.registry.names.get(node)
        if name is None:
            log.warning("refused a reply from node %d: it is not a registered site", node)
            return f"node-{node}", f"unregistered node {node}"
        if claimed is not None and claimed != name:
            log.warning(
                "refused a reply from site %s (node %d): it claims to be site %r",
                name, node, claimed,
            )  # fmt: skip
            return name, f"claims to be site {claimed!r}"
        return name, None


class SiteTracking(Strategy):
    """Delegates to ``inner``; reports a :class:`RoundRecord` after each evaluation.

    ``registry`` and ``heads`` are the deployment's (see module docstring); without them (a
    simulation) names come from the replies and no ledger head is required.
    """

    def __init__(
        self,
        inner: Strategy,
        on_round: Callable[[RoundRecord], None],
        rules: UpdateRules | None = None,
        registry: SiteRegistry | None = None,
        heads: LedgerHeads | None = None,
        min_sites: int | None = None,
    ) -> None:
        self.inner = inner
        # A round's update goes into the model only when at least this many sites replied
        # (a refusal or a rejected update is a reply; a site that timed out or went offline is
        # not; None: whatever came, as Flower's strategies aggregate): a round that faults left
        # with fewer keeps the global model as it was.
        self.min_sites = min_sites
        self._updated = True
        self.on_round = on_round
        self.rules = rules
        self.registry = registry
        self.heads = heads
        self._global: ArrayRecord | None = None  # this round's model, the updates' reference
        self._train_loss: dict[str, float] = {}
        self._epsilon: dict[str, float] = {}
        self._refused: dict[str, str] = {}
        self._rejected: dict[str, str] = {}
        self._missing: dict[str, str] = {}
        self._requests: list[Message] = []  # this round's train requests (ids once pushed)
        self._sites = SiteNames(registry)

    def pending(self) -> dict[str, dict[str, Any]]:
        """The train side of the round whose evaluation is still to come (its record is written
        after that evaluation): what a checkpoint keeps so a resumed run writes the same record."""
        return {
            "train_loss": dict(self._train_loss),
            "epsilon": dict(self._epsilon),
            "refused": dict(self._refused),
            "rejected": dict(self._rejected),
            "missing": dict(self._missing),
            "updated": self._updated,
        }

    def restore_pending(self, pending: dict[str, dict[str, Any]]) -> None:
        """Inverse of :meth:`pending`, in a resumed run."""
        self._train_loss = {k: float(v) for k, v in pending.get("train_loss", {}).items()}
        self._epsilon = {k: float(v) for k, v in pending.get("epsilon", {}).items()}
        self._refused = dict(pending.get("refused", {}))
        self._rejected = dict(pending.get("rejected", {}))
        self._missing = dict(pending.get("missing", {}))
        self._updated = bool(pending.get("updated", True))

    def _node_name(self, node: int) -> str:
        return self._sites.name_of(node)

    def identify(self, reply: Message) -> tuple[str, str | None]:
        """The replying site's name, and why the reply must be refused for who sent it."""
        return self._sites.identify(reply)

    def _admit(self, reply: Message, name: str, ignore: frozenset[str] = frozenset()) -> str | None:
        """Why a (non-error) reply from ``name`` must be refused: metrics, then ledger head.

        ``ignore``: metrics judged with the other part of a train reply that also carries an
        evaluation (:mod:`fedcare.server.round_loop`), so a bad training loss costs the site its
        update, not its evaluation, and a bad accuracy the other way round - as when the two
        travelled in separate replies."""
        metrics = reply.content.metric_records.get(keys.METRICS)
        problem = None
        if metrics is not None:
            problem = metric_problem({k: v for k, v in metrics.items() if k not in ignore})
        if problem is None and self.heads is not None:
            problem = self.heads.check(name, reply.content.config_records.get(keys.LEDGER))
        return problem

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        self._requests = list(self.inner.configure_train(server_round, arrays, config, grid))
        return self._requests

    def _no_reply(self, replies: list[Message]) -> tuple[dict[str, str], list[Message]]:
        """Who sent nothing, and why; and the replies that came from sites. In a deployment a
        registered site that was not connected when the round began (so not asked) is offline.

        Flower's SuperLink itself answers for a site that cannot reply: an error from node
        ``SUPERLINK_NODE_ID`` in reply to the request (its node went offline, or its reply was
        lost). That is the site's absence, recorded under the site's name, not a reply."""
        destination = {
            m.metadata.message_id: m.metadata.dst_node_id
            for m in self._requests
            if m.metadata.message_id  # set when the grid pushed it
        }
        missing: dict[str, str] = {}
        from_sites: list[Message] = []
        for reply in replies:
            node = destination.get(reply.metadata.reply_to_message_id)
            if reply.metadata.src_node_id == SUPERLINK_NODE_ID and reply.has_error() and node:
                offline = reply.error.code == ErrorCode.NODE_UNAVAILABLE
                missing[self._node_name(node)] = "offline" if offline else "timeout"
            else:
                from_sites.append(reply)
        answered = {r.metadata.src_node_id for r in from_sites}
        asked = {m.metadata.dst_node_id for m in self._requests}
        for node in sorted(asked - answered):
            missing.setdefault(self._node_name(node), "timeout")
        if self.registry is not None:  # registered, but not connected when the round began
            for node, name in sorted(self.registry.names.items()):
                if node not in asked:
                    missing.setdefault(name, "offline")
        return missing, from_sites

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self._train_loss, self._epsilon, self._refused, self._rejected = {}, {}, {}, {}
        accepted: list[tuple[str, Message]] = []
        self._missing, replies = self._no_reply(list(replies))
        for name, why in self._missing.items():
            log.warning("round %d: no reply from site %s (%s)", server_round, name, why)
        for reply in replies:
            name, rejection = self.identify(reply)
            if rejection is None and reply.has_error():
                reason = reply.error.reason or ""
                known = reason in keys.REFUSAL_CODES
                self._refused[name] = reason if known else f"error {reply.error.code}"
                refusal = reason in REFUSALS
                self._missing[name] = f"{'refused' if refusal else 'failed'}: {self._refused[name]}"
                log.warning("round %d: site %s sent no update (%s)", server_round, name, reason)
                continue
            rejection = rejection or self._admit(reply, name, ignore=keys.EVAL_METRICS)
            metrics = _metrics(reply)
            if rejection is None and metrics is not None and keys.EPSILON in metrics:
                self._epsilon[name] = float(metrics[keys.EPSILON])  # type: ignore[arg-type]
            rejection = rejection or self._screen(reply)
            if rejection is not None:
                self._rejected[name] = rejection
                log.warning("round %d: rejected %s's update: %s", server_round, name, rejection)
                continue
            if metrics is not None and keys.TRAIN_LOSS in metrics:
                self._train_loss[name] = float(metrics[keys.TRAIN_LOSS])  # type: ignore[arg-type]
            accepted.append((name, reply))
        self._updated = self.min_sites is None or len(replies) >= self.min_sites
        if not self._updated:
            log.warning(
                "round %d: %d site(s) replied, fewer than min-sites %d: the global model is kept "
                "as it was", server_round, len(replies), self.min_sites,
            )  # fmt: skip
            return None, None
        # In site-name order, not arrival order: floating-point sums depend on their order, and
        # a run must give the same model from the same seed however the replies raced in.
        in_order = [reply for _, reply in sorted(accepted, key=lambda pair: pair[0])]
        return self.inner.aggregate_train(server_round, in_order)

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
        sites: dict[str, SiteEvaluation] = {}
        rejected = dict(self._rejected)
        accepted: list[Message] = []
        for reply in replies:
            metrics = _metrics(reply)
            if metrics is None:
                continue
            name, rejection = self.identify(reply)
            values = [metrics.get(k) for k in (keys.EVAL_LOSS, keys.EVAL_ACCURACY, keys.EVAL_AUROC)]
            if rejection is None and any(v is None for v in values):
                rejection = "the evaluation lacks loss, accuracy or AUROC"
            folded = reply.metadata.message_type == MessageType.TRAIN
            rejection = rejection or self._admit(reply, name, TRAIN_ONLY if folded else frozenset())
            if rejection is not None:
                log.warning("round %d: rejected %s's evaluation: %s", server_round, name, rejection)
                earlier = rejected.get(name)
                note = f"evaluation: {rejection}"
                rejected[name] = f"{earlier}; {note}" if earlier else note
                continue
            loss, accuracy, auroc = (float(v) for v in values)  # type: ignore[arg-type]
            sites[name] = SiteEvaluation(
                loss=loss, accuracy=accuracy, auroc=None if math.isnan(auroc) else auroc
            )
            accepted.append(reply)
        record = RoundRecord(
            round=server_round,
            sites=sites,
            train_loss=self._train_loss,
            epsilon=self._epsilon,
            refused=self._refused,
            rejected=rejected,
            missing=self._missing,
            updated=self._updated,
        )
        self._train_loss, self._epsilon, self._refused, self._rejected = {}, {}, {}, {}
        self._missing, self._updated = {}, True
        self.on_round(record)
        return self.inner.aggregate_evaluate(server_round, [_evaluation_view(r) for r in accepted])

    def summary(self) -> None:
        self.inner.summary()
