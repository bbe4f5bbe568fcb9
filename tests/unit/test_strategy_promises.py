"""The coordinator runs the Flower strategy the run names, with the run's own settings.

A federation configured for Krum with a bound of two Byzantine sites, or a trimmed mean cutting
30 %, must get exactly that from Flower, with every connected site asked to train and evaluate,
the round waiting for the configured number of sites, and metrics averaged per site (the figure
clinicians compare), not weighted by a site's row count.
"""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
)

from fedcare import messages as keys
from fedcare.config import RunConfig, StrategyName
from fedcare.server.strategies import build_strategy, mean_over_sites

FLOWER_CLASS = {
    StrategyName.FEDAVG: FedAvg,
    StrategyName.FEDPROX: FedProx,
    StrategyName.FEDADAM: FedAdam,
    StrategyName.FEDYOGI: FedYogi,
    StrategyName.FEDTRIMMEDAVG: FedTrimmedAvg,
    StrategyName.FEDMEDIAN: FedMedian,
    StrategyName.KRUM: Krum,
}


@pytest.mark.parametrize("name", list(StrategyName))
def test_each_strategy_name_runs_that_flower_strategy_over_every_site(name: StrategyName) -> None:
    # Prepare
    config = RunConfig(strategy=name)
    # Execute
    strategy = build_strategy(config, min_sites=3)
    # Assert: the named class itself, every site sampled, the round waits for three sites
    assert type(strategy) is FLOWER_CLASS[name]
    assert isinstance(strategy, FedAvg)
    assert (strategy.fraction_train, strategy.fraction_evaluate) == (1.0, 1.0)
    assert strategy.min_train_nodes == 3
    assert strategy.min_evaluate_nodes == 3
    assert strategy.min_available_nodes == 3
    assert strategy.weighted_by_key == keys.WEIGHT
    assert strategy.arrayrecord_key == keys.ARRAYS
    assert strategy.configrecord_key == keys.CONFIG
    assert strategy.train_metrics_aggr_fn is mean_over_sites
    assert strategy.evaluate_metrics_aggr_fn is mean_over_sites


def test_fedprox_gets_the_configured_proximal_mu() -> None:
    # Prepare
    config = RunConfig(strategy=StrategyName.FEDPROX, proximal_mu=0.37)
    # Execute
    strategy = build_strategy(config, min_sites=2)
    # Assert
    assert isinstance(strategy, FedProx)
    assert strategy.proximal_mu == 0.37


@pytest.mark.parametrize("name", [StrategyName.FEDADAM, StrategyName.FEDYOGI])
def test_adaptive_strategies_get_the_configured_server_and_site_learning_rates(
    name: StrategyName,
) -> None:
    # Prepare: rates unlike Flower's defaults
    config = RunConfig(strategy=name, server_learning_rate=0.07, learning_rate=0.013)
    # Execute
    strategy = build_strategy(config, min_sites=2)
    # Assert
    assert isinstance(strategy, FedAdam | FedYogi)
    assert (strategy.eta, strategy.eta_l) == (0.07, 0.013)


def test_trimmed_mean_gets_the_configured_trim_fraction() -> None:
    # Prepare: a trim unlike Flower's default of 0.2
    config = RunConfig(strategy=StrategyName.FEDTRIMMEDAVG, trim_fraction=0.3)
    # Execute
    strategy = build_strategy(config, min_sites=4)
    # Assert
    assert isinstance(strategy, FedTrimmedAvg)
    assert strategy.beta == 0.3


def test_krum_gets_the_configured_bound_on_byzantine_sites() -> None:
    # Prepare: a bound unlike Flower's default of 0
    config = RunConfig(strategy=StrategyName.KRUM, max_malicious_sites=2)
    # Execute
    strategy = build_strategy(config, min_sites=7)
    # Assert
    assert isinstance(strategy, Krum)
    assert strategy.num_malicious_nodes == 2


def test_a_strategy_name_without_a_flower_strategy_is_a_loud_error_naming_it() -> None:
    # Prepare: a config that slipped past validation (frozen, so forced)
    config = RunConfig(strategy=StrategyName.FEDAVG)
    object.__setattr__(config, "strategy", "fedbogus")
    # Execute
    with pytest.raises(AssertionError) as raised:
        build_strategy(config, min_sites=2)
    # Assert
    assert str(raised.value) == "unhandled strategy fedbogus"


# --- per-site metric means ----------------------------------------------------------------------


def _reply(metrics: dict[str, object]) -> RecordDict:
    return RecordDict(
        {
            keys.METRICS: MetricRecord(metrics),  # type: ignore[arg-type]
            keys.SITE: ConfigRecord({keys.SITE_NAME: "va"}),
        }
    )


def test_metrics_are_the_plain_mean_over_sites_without_the_weight() -> None:
    # Prepare: a large site and a small one; the mean ignores their weights
    replies = [
        _reply({keys.EVAL_LOSS: 1.0, keys.EVAL_ACCURACY: 0.5, keys.WEIGHT: 900.0}),
        _reply({keys.EVAL_LOSS: 2.0, keys.EVAL_ACCURACY: 1.0, keys.WEIGHT: 10.0}),
        _reply({keys.EVAL_LOSS: 4.5, keys.EVAL_ACCURACY: 0.75, keys.WEIGHT: 10.0}),
    ]
    # Execute
    means = mean_over_sites(replies, keys.WEIGHT)
    # Assert
    assert dict(means) == {keys.EVAL_LOSS: 2.5, keys.EVAL_ACCURACY: 0.75}


def test_an_undefined_auroc_is_left_out_of_its_mean_and_an_all_undefined_one_is_omitted() -> None:
    # Prepare: AUROC is NaN at a single-class site; epsilon is NaN everywhere
    replies = [
        _reply({keys.EVAL_AUROC: math.nan, keys.EPSILON: math.nan, keys.WEIGHT: 1.0}),
        _reply({keys.EVAL_AUROC: 0.6, keys.EPSILON: math.nan, keys.WEIGHT: 1.0}),
        _reply({keys.EVAL_AUROC: 0.8, keys.EPSILON: math.nan, keys.WEIGHT: 1.0}),
    ]
    # Execute
    means = mean_over_sites(replies, keys.WEIGHT)
    # Assert
    assert dict(means) == {keys.EVAL_AUROC: pytest.approx(0.7)}


def test_a_list_valued_metric_is_not_averaged() -> None:
    # Prepare
    replies = [_reply({keys.EVAL_LOSS: 1.0, "per-class": [0.1, 0.2], keys.WEIGHT: 1.0})]
    # Execute
    means = mean_over_sites(replies, keys.WEIGHT)
    # Assert
    assert dict(means) == {keys.EVAL_LOSS: 1.0}


def test_a_site_weight_key_of_the_runs_choice_is_the_one_left_out() -> None:
    # Prepare
    replies = [_reply({"num-examples": 5.0, keys.WEIGHT: 2.0})]
    # Execute
    means = mean_over_sites(replies, "num-examples")
    # Assert
    assert dict(means) == {keys.WEIGHT: 2.0}


def test_no_replies_give_no_metrics() -> None:
    # Execute
    means = mean_over_sites([], keys.WEIGHT)
    # Assert
    assert dict(means) == {}
