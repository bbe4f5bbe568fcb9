"""The non-federated references a federated survival model is judged against.

* local-only: each site trains on its own training patients, standardised with its own
  statistics: what a hospital gets without the federation.
* pooled: one model on every site's training patients, standardised with pooled statistics:
  what the federation could reach if the data could be pooled.
* Cox: lifelines' ``CoxPHFitter`` on the same pooled, standardised training rows: an
  independent, well-tested reference for what these features can tell.

Every model is scored on every site's own test patients; the IPCW censoring distribution for
the Brier score is one Kaplan-Meier fit on all training patients (the trial's censoring is
mostly administrative and shared by its institutions, and at single sites of 22-30 training
patients it drops to zero within the two-year grid: inst01's longest training follow-up,
588 days, is censored).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from fedcare.tasks.ncctg_lung.data import SurvivalRows, site_rows, split_site
from fedcare.tasks.ncctg_lung.metrics import CensoringDistribution, SiteScores, mean_scores, score
from fedcare.tasks.ncctg_lung.model import predict_survival
from fedcare.tasks.ncctg_lung.preprocess import Scaling, discretise
from fedcare.tasks.ncctg_lung.schema import EVAL_GRID, FEATURE_NAMES
from fedcare.tasks.ncctg_lung.training import TrainConfig, train_model


class Method(StrEnum):
    """A reference training setup."""

    LOCAL = "local-only"
    POOLED = "pooled"
    COX = "cox"


@dataclass(frozen=True)
class BaselineReport:
    """Each method's scores on each site's test patients (sites in task order)."""

    config: TrainConfig
    sites: tuple[str, ...]
    scores: Mapping[Method, Mapping[str, SiteScores]]

    def mean(self, method: Method) -> SiteScores:
        """The unweighted mean over sites."""
        return mean_scores(self.scores[method])


def neural_survival(
    train: SurvivalRows, tests: Mapping[str, SurvivalRows], config: TrainConfig
) -> dict[str, np.ndarray]:
    """A model trained on ``train`` (standardised with its own statistics); each test set's
    survival on ``EVAL_GRID``, scaled with the same statistics."""
    scaling = Scaling.fit(train)
    model = train_model(scaling.apply(train), discretise(train.time, train.event), config)
    return {
        site: predict_survival(model, scaling.apply(rows), EVAL_GRID)
        for site, rows in tests.items()
    }


def cox_survival(
    train: SurvivalRows, tests: Mapping[str, SurvivalRows], penalizer: float = 0.0
) -> dict[str, np.ndarray]:
    """lifelines' Cox model on ``train`` (pooled scaling); each test set's survival curve."""
    import pandas as pd
    from lifelines import CoxPHFitter

    scaling = Scaling.fit(train)
    frame = pd.DataFrame(scaling.apply(train).astype(np.float64), columns=list(FEATURE_NAMES))
    frame["time"], frame["event"] = train.time, train.event
    cox = CoxPHFitter(penalizer=penalizer).fit(frame, duration_col="time", event_col="event")
    curves = {}
    for site, rows in tests.items():
        x = pd.DataFrame(scaling.apply(rows).astype(np.float64), columns=list(FEATURE_NAMES))
        curves[site] = cox.predict_survival_function(x, times=EVAL_GRID).to_numpy().T
    return curves


def run_baselines(
    config: TrainConfig | None = None, sites: Mapping[str, SurvivalRows] | None = None
) -> BaselineReport:
    """Local-only, pooled and Cox, each scored on every site's test patients.

    ``config``: how the neural models train (default :class:`TrainConfig`); ``sites``: site
    name -> patients (default: the task's sites, :func:`site_rows`).
    """
    config = TrainConfig() if config is None else config
    by_site = site_rows() if sites is None else sites
    splits = {name: split_site(rows) for name, rows in by_site.items()}
    tests = {name: test for name, (_, test) in splits.items()}
    pooled_train = SurvivalRows.concatenate([train for train, _ in splits.values()])
    censoring = CensoringDistribution.fit(pooled_train.time, pooled_train.event)

    local = {
        name: neural_survival(train, {name: tests[name]}, config)[name]
        for name, (train, _) in splits.items()
    }
    curves = {
        Method.LOCAL: local,
        Method.POOLED: neural_survival(pooled_train, tests, config),
        Method.COX: cox_survival(pooled_train, tests),
    }
    return BaselineReport(
        config=config,
        sites=tuple(by_site),
        scores={
            method: {name: score(curve[name], tests[name], censoring) for name in by_site}
            for method, curve in curves.items()
        },
    )
