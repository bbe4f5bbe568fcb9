"""Cross-site model validation, the coordinator's half: one candidate model, every site.

*Model validation* (each version, at the sites) is not the *update checks* of
:mod:`fedcare.server.validation` (each round, at the coordinator). Two exchanges:

1. ``query.feature_stats``: every site releases noised sufficient statistics of its training
   rows (recorded in its privacy ledger before they leave; :mod:`fedcare.feature_stats`). The
   coordinator combines them into the federation's standardisation, the preprocessing a
   released model is served with: never one site's own statistics.
2. ``query.validate``: every site scores the candidate, preprocessed with exactly those
   statistics, on its held-out test rows and replies with aggregates only (AUROC with its 95 %
   interval, calibration, ... and the same per subgroup large enough to report).

The ServerApp runs this in ``mode = "validate"``, over Flower's grid like a training round, in a
deployment and in a simulation alike; the result is ``validation.json`` in the run folder, which
``fedcare registry validate`` attaches to the version.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, TypeGuard

from flwr.app import ArrayRecord, ConfigRecord, ConfigRecordValues, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid

from fedcare import messages as keys
from fedcare.atomic import write_json_atomic
from fedcare.errors import ExitCode, FedcareError
from fedcare.feature_stats import DEFAULT_NOISE_MULTIPLIER, FeatureStats, combine_for_task
from fedcare.server.ledger_heads import LedgerHeads
from fedcare.server.tracking import SiteNames

log = logging.getLogger(__name__)

VALIDATION_FILE = "validation.json"
PREPROCESSING_FILE = "preprocessing.json"  # a training run's federation statistics
FEATURE_STATS = keys.FEATURE_STATS_QUERY
VALIDATE = keys.VALIDATE_QUERY
NODE_WAIT_S = 300.0


class ValidationFailed(FedcareError):
    """Too few sites answered to validate; nothing is written."""


class StatisticsNotReleased(ValidationFailed):
    """Too few sites released their statistics before round 1: the run trains nothing (the
    CLI exits with :data:`ExitCode.NO_TRAINING`, as for a run whose every round was refused)."""

    exit_code = ExitCode.NO_TRAINING


def _wait_for_sites(grid: Grid, min_sites: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= min_sites:
            return nodes
        if time.monotonic() > deadline:
            raise ValidationFailed(
                f"{len(nodes)} of {min_sites} sites connected in {timeout:.0f} s"
            )
        time.sleep(0.5)


class SiteExchange:
    """Send one query to every connected site; keep the replies of sites that are who they
    say they are and whose signed ledger head did not go back (as training replies).

    After :meth:`ask`, ``problems`` holds the sites that replied but whose reply was refused
    (a reply, as in a round) and ``missing`` those that sent none: ``timeout`` (no reply in
    time) or ``offline`` (Flower's SuperLink answered for the site's node, which went away)."""

    def __init__(self, grid: Grid, nodes: list[int], names: SiteNames, heads: LedgerHeads | None):
        self.grid, self.nodes, self.names, self.heads = grid, nodes, names, heads
        self.problems: dict[str, str] = {}  # site -> why its reply was refused
        self.missing: dict[str, str] = {}  # site -> "timeout" | "offline"

    def ask(
        self, message_type: str, config: dict[str, ConfigRecordValues], arrays: ArrayRecord | None,
        timeout: float,
    ) -> dict[str, Message]:  # fmt: skip
        self.problems, self.missing = {}, {}  # this exchange's only: earlier trouble not carried
        messages = []
        for node in self.nodes:
            content = RecordDict({keys.CONFIG: ConfigRecord(config)})
            if arrays is not None:
                content[keys.ARRAYS] = arrays
            messages.append(Message(content, dst_node_id=node, message_type=message_type))
        accepted: dict[str, Message] = {}
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        # the grid set each request's id when it pushed it
        destination = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        gone: set[int] = set()  # nodes Flower's SuperLink reported unavailable
        answered: set[int] = set()
        for reply in replies:
            if reply.metadata.src_node_id == SUPERLINK_NODE_ID and reply.has_error():
                # Flower answering for a site that cannot: its absence, not its reply
                node = destination.get(reply.metadata.reply_to_message_id)
                if node is not None and reply.error.code == ErrorCode.NODE_UNAVAILABLE:
                    gone.add(node)
                continue
            answered.add(reply.metadata.src_node_id)
            name, problem = self.names.identify(reply)
            if problem is None and reply.has_error():
                problem = reply.error.reason or "site error"
            if problem is None and self.heads is not None:
                problem = self.heads.check(name, reply.content.config_records.get(keys.LEDGER))
            if problem is None and keys.METRICS not in reply.content.metric_records:
                problem = "reply without metrics"
            if problem is not None:
                log.warning("site %s: %s reply refused: %s", name, message_type, problem)
                self.problems[name] = problem
                continue
            accepted[name] = reply
        for node in self.nodes:
            if node not in answered:
                self.missing[self.names.name_of(node)] = "offline" if node in gone else "timeout"
        return accepted


def federation_statistics(
    exchange: SiteExchange,
    request: dict[str, ConfigRecordValues],
    min_sites: int,
    timeout: float,
    sigma: float = DEFAULT_NOISE_MULTIPLIER,
) -> tuple[FeatureStats, dict[str, Any]]:
    """Every site releases noised sums of its training rows (``query.feature_stats``; each
    site records the release in its ledger first); returns the combined statistics and what to
    keep of them (``preprocessing.json``: the statistics, the sites, the privacy cost).
    ``sigma``: the noise multiplier asked for (a site never uses less than its floor,
    :data:`fedcare.feature_stats.DEFAULT_NOISE_MULTIPLIER`)."""
    stats_request = dict(request) | {keys.FEATURE_STATS_NOISE: sigma}
    stats_replies = exchange.ask(FEATURE_STATS, stats_request, None, timeout)
    sums: dict[str, list[float]] = {}
    for name, reply in stats_replies.items():
        values = _metrics(reply).get(keys.FEATURE_SUMS)
        if _well_formed(values, len(request_feature_names(request))):
            sums[name] = [float(v) for v in values]
        else:
            exchange.problems[name] = "malformed feature sums"
    # A site whose reply was refused has answered, as a refused or rejected reply in a round
    # has (a budget refusal, an unregistered node, a name claim, a ledger head gone back): the
    # statistics are then the other sites', and the round that follows judges it again. Only
    # sites that sent nothing (timeout, offline) are short of ``min_sites``.
    answered = len(stats_replies) + len(exchange.problems)
    if answered < min_sites or len(sums) < MIN_RELEASING_SITES:
        hint = (
            "their budgets cannot fit the statistics release: see 'fedcare privacy report', "
            "or train with each site's own statistics (--preprocessing site)"
            if exchange.problems and set(exchange.problems.values()) == {keys.REFUSED_BUDGET}
            else "a federation's statistics need at least two sites; with fewer, train with "
            "each site's own (--preprocessing site)"
            if answered < MIN_RELEASING_SITES
            else "see the sites' logs and 'fedcare coordinator status'"
        )
        trouble = exchange.problems | exchange.missing
        raise StatisticsNotReleased(
            f"no training: {len(sums)} of {min_sites} sites released usable feature statistics "
            f"before round 1 and {answered} replied (at least {MIN_RELEASING_SITES} must "
            f"release{'; ' + _problems(trouble) if trouble else ''}) — {hint}"
        )
    declined = sorted(n for n, p in exchange.problems.items() if p == keys.REFUSED_BUDGET)
    if declined:
        log.warning("feature statistics without %s: budget refused", ", ".join(declined))
    refused = {n: p for n, p in exchange.problems.items() if p != keys.REFUSED_BUDGET}
    if refused:
        log.warning("feature statistics without %s", _problems(refused))
    stats = combine_for_task(str(request[keys.TASK]), list(sums.values()))
    return stats, stats.to_json() | {
        "sites": sorted(sums),
        "declined": declined,
        "refused": dict(sorted(refused.items())),
        "missing": dict(sorted(exchange.missing.items())),
        "privacy": statistics_privacy(sigma),
    }


# Fewer would make the "federation's" statistics one site's own.
MIN_RELEASING_SITES = 2


def connect(
    grid: Grid, min_sites: int, names: SiteNames, heads: LedgerHeads | None
) -> SiteExchange:
    """An exchange with every connected site, once at least ``min_sites`` are."""
    return SiteExchange(grid, _wait_for_sites(grid, min_sites, NODE_WAIT_S), names, heads)


def validate_candidate(
    exchange: SiteExchange,
    candidate: ArrayRecord,
    request: dict[str, ConfigRecordValues],
    thresholds: dict[str, int],
    min_sites: int,
    out_dir: Path,
    timeout: float,
    preprocessing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Both exchanges (module docstring); writes and returns ``validation.json``'s content.

    ``preprocessing``: the statistics the candidate was trained with (a run with
    ``preprocessing = "federation"``); the sites then release none again."""
    if preprocessing is None:
        stats, record = federation_statistics(exchange, request, min_sites, timeout)
    else:
        stats, record = FeatureStats.from_json(preprocessing), preprocessing
    config = dict(request) | {
        keys.PREPROCESSING_MEAN: list(stats.mean),
        keys.PREPROCESSING_STD: list(stats.std),
        keys.MIN_SUBGROUP_PATIENTS: thresholds[keys.MIN_SUBGROUP_PATIENTS],
        keys.MIN_SUBGROUP_EVENTS: thresholds[keys.MIN_SUBGROUP_EVENTS],
    }
    replies = exchange.ask(VALIDATE, config, candidate, timeout)
    sites = {name: by_cell(_metrics(reply)) for name, reply in sorted(replies.items())}
    result: dict[str, Any] = {
        "preprocessing": record,
        "thresholds": dict(thresholds),
        "sites": sites,
        "missing": dict(sorted((exchange.problems | exchange.missing).items())),
    }
    if exchange.heads is not None:  # deployed: what each site's signed head says it has spent
        involved = sorted(set(sites) | set(record.get("sites", [])))
        result["privacy"] = exchange.heads.privacy_record(involved)
    write_json_atomic(out_dir / VALIDATION_FILE, result)
    return result


def statistics_noise(target_epsilon: float) -> float:
    """The noise multiplier a run asks its statistics release for: the sites' floor, or, when
    the run has a target ε (which covers every release of the run at each site), enough noise
    that the release takes at most :data:`STATISTICS_SHARE` of the target (at δ = 1e-5, RDP);
    each site then calibrates its rounds to what is left (privacy.budget.plan_round)."""
    if target_epsilon <= 0:
        return DEFAULT_NOISE_MULTIPLIER
    from fedcare.privacy.accounting import smallest_noise_multiplier

    sigma = smallest_noise_multiplier(
        _statistics_epsilon, STATISTICS_SHARE * target_epsilon, DEFAULT_NOISE_MULTIPLIER
    )
    if sigma is None:  # a single Gaussian release reaches any ε > 0 far below the ceiling
        raise ValidationFailed(f"no statistics noise fits target epsilon {target_epsilon:g}")
    return sigma


STATISTICS_SHARE = 0.25


def _statistics_epsilon(sigma: float) -> float:
    return float(statistics_privacy(sigma)["epsilon_at_delta_1e-5"])


def statistics_privacy(sigma: float) -> dict[str, float | str]:
    """What releasing the statistics cost each site, as its ledger accounts it: one Gaussian
    mechanism of noise multiplier ``sigma`` (ε shown at δ = 1e-5; each site's ledger holds the
    event at its own δ, and ``fedcare privacy report`` shows its ε)."""
    from fedcare.config import AccountantName
    from fedcare.privacy.accounting import epsilon_from_events
    from fedcare.privacy.events import GAUSSIAN_KIND, PrivacyEvent

    event = PrivacyEvent("statistics", 0, sigma, 1.0, 1, 1e-5, 1.0, "", kind=GAUSSIAN_KIND)
    epsilon = epsilon_from_events([event], 1e-5, AccountantName.RDP)
    return {"mechanism": "gaussian", "noise_multiplier": sigma, "epsilon_at_delta_1e-5": epsilon}


def request_feature_names(request: dict[str, ConfigRecordValues]) -> tuple[str, ...]:
    from fedcare.tasks import get_task

    return tuple(get_task(str(request[keys.TASK])).feature_names)


def _well_formed(values: Any, n_features: int) -> TypeGuard[list[float]]:
    """Noised sums of one site: 2F+1 finite numbers (anything else is refused, not combined)."""
    return (
        isinstance(values, list)
        and len(values) == 2 * n_features + 1
        and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
    )


def _metrics(reply: Message) -> dict[str, Any]:
    return dict(reply.content.metric_records[keys.METRICS])


def by_cell(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A site's flat reply (``cell/metric``) as {cell: {metric: value}}; an undefined value
    (NaN, e.g. an AUROC where one class is absent) becomes null."""
    cells: dict[str, dict[str, Any]] = {}
    for key, value in sorted(metrics.items()):
        cell, _, metric = key.rpartition("/")
        finite = not (isinstance(value, float) and not math.isfinite(value))
        cells.setdefault(cell, {})[metric] = value if finite else None
    return cells


def _problems(problems: dict[str, str]) -> str:
    return "; ".join(f"{site}: {why}" for site, why in sorted(problems.items())) or "no replies"
