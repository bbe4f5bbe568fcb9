"""Selecting one of Flower's own strategies by name, configured for a site federation.

The robust ones (trimmed mean, coordinate-wise median, Krum) are Flower's too: a site that sends
a wild update moves their result far less than it moves a mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypedDict, cast

import numpy as np
from flwr.app import MetricRecord, MetricRecordValues, RecordDict
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Strategy,
)

from fedcare import messages as keys
from fedcare.config import RunConfig, StrategyName


def mean_over_sites(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Unweighted mean of each metric over sites, ignoring NaN (FLamby's per-center mean).

    Flower's default weights metrics by the reported sample count; a per-site mean is the
    figure clinicians compare, and needs no counts.
    """
    per_key: dict[str, list[float]] = {}
    for record in records:
        for metric_record in record.metric_records.values():
            for name, value in metric_record.items():
                if name != weighted_by_key and isinstance(value, int | float):
                    per_key.setdefault(name, []).append(float(value))
    means: dict[str, float] = {}
    for name, values in per_key.items():
        finite = [v for v in values if not math.isnan(v)]
        if finite:
            means[name] = float(np.mean(finite))
    return MetricRecord(cast(dict[str, MetricRecordValues], means))


class _CommonOptions(TypedDict):
    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int
    weighted_by_key: str
    arrayrecord_key: str
    configrecord_key: str
    train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord]
    evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord]


def build_strategy(config: RunConfig, min_sites: int) -> Strategy:
    """The Flower strategy named by ``config.strategy``, waiting for ``min_sites`` sites."""
    common: _CommonOptions = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": min_sites,
        "min_evaluate_nodes": min_sites,
        "min_available_nodes": min_sites,
        "weighted_by_key": keys.WEIGHT,
        "arrayrecord_key": keys.ARRAYS,
        "configrecord_key": keys.CONFIG,
        "train_metrics_aggr_fn": mean_over_sites,
        "evaluate_metrics_aggr_fn": mean_over_sites,
    }
    match config.strategy:
        case StrategyName.FEDAVG:
            return FedAvg(**common)
        case StrategyName.FEDPROX:
            return FedProx(**common, proximal_mu=config.proximal_mu)
        case StrategyName.FEDADAM:
            return FedAdam(**common, eta=config.server_learning_rate, eta_l=config.learning_rate)
        case StrategyName.FEDYOGI:
            return FedYogi(**common, eta=config.server_learning_rate, eta_l=config.learning_rate)
        case StrategyName.FEDTRIMMEDAVG:
            return FedTrimmedAvg(**common, beta=config.trim_fraction)
        case StrategyName.FEDMEDIAN:
            return FedMedian(**common)
        case StrategyName.KRUM:
            return Krum(**common, num_malicious_nodes=config.max_malicious_sites)
    raise AssertionError(f"unhandled strategy {config.strategy}")  # pragma: no cover
