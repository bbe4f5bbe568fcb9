"""Concordance index and the IPCW integrated Brier score of predicted survival curves.

Every predictor (the neural models, Cox) is scored from the same thing: each patient's
predicted survival on ``EVAL_GRID``. Patients are ranked for the C-index by their restricted
mean survival time over the grid (the area under the curve from day 0), which works for
models whose curves cross (the MLP) and orders Cox's patients exactly as its risk score does.

The Brier score at day t weighs each test patient by the inverse probability of remaining
uncensored (Graf et al., 1999): a death by t by 1/G(T-), a patient still followed at t by
1/G(t), a patient censored before t not at all. G is the Kaplan-Meier estimate of the
censoring distribution on training rows, passed in by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedcare.errors import DataError
from fedcare.tasks.ncctg_lung.data import FloatArray, SurvivalRows
from fedcare.tasks.ncctg_lung.schema import EVAL_GRID


@dataclass(frozen=True)
class CensoringDistribution:
    """G(t) = P(still followed at t), a Kaplan-Meier step function of the censoring times."""

    timeline: FloatArray  # ascending, starting at 0
    survival: FloatArray  # G right after each timeline point

    @classmethod
    def fit(cls, time: FloatArray, event: FloatArray) -> CensoringDistribution:
        """Kaplan-Meier (lifelines) with censoring as the event: ``1 - event``."""
        from lifelines import KaplanMeierFitter  # slow import; only when scoring

        km = KaplanMeierFitter().fit(time, event_observed=1.0 - event)
        frame = km.survival_function_
        return cls(
            timeline=frame.index.to_numpy(dtype=np.float64),
            survival=frame.iloc[:, 0].to_numpy(dtype=np.float64),
        )

    def at(self, t: FloatArray) -> FloatArray:
        """G(t), right-continuous: a censoring at t already counts."""
        index = np.searchsorted(self.timeline, t, side="right") - 1
        return np.where(index >= 0, self.survival[np.maximum(index, 0)], 1.0)

    def before(self, t: FloatArray) -> FloatArray:
        """G(t-), the left limit: a censoring at t does not count yet."""
        index = np.searchsorted(self.timeline, t, side="left") - 1
        return np.where(index >= 0, self.survival[np.maximum(index, 0)], 1.0)


def _trapezoid(values: FloatArray, days: FloatArray) -> FloatArray:
    """Trapezoidal integral over the last axis (``np.trapezoid`` needs numpy 2; fedcare
    allows 1.26)."""
    widths = np.diff(days)
    area: FloatArray = ((values[..., 1:] + values[..., :-1]) / 2.0 * widths).sum(axis=-1)
    return area


def brier_scores(
    survival: FloatArray,
    time: FloatArray,
    event: FloatArray,
    censoring: CensoringDistribution,
    grid: FloatArray = EVAL_GRID,
) -> FloatArray:
    """The IPCW Brier score at each day of ``grid``; ``survival`` is (patients, len(grid))."""
    died_by = (time[:, None] <= grid[None, :]) & (event[:, None] > 0)
    followed = time[:, None] > grid[None, :]
    g_death = np.broadcast_to(censoring.before(time)[:, None], died_by.shape)
    g_grid = np.broadcast_to(censoring.at(grid)[None, :], followed.shape)
    needed = (died_by & (g_death <= 0.0)) | (followed & (g_grid <= 0.0))
    if needed.any():
        raise DataError(
            f"Brier score: the censoring distribution reaches 0 by day "
            f"{float(grid[needed.any(axis=0)][0]):g}, so some patient's weight is infinite; "
            "fit it on more training rows or end the time grid earlier"
        )
    death_term = np.where(died_by, survival**2 / np.where(died_by, g_death, 1.0), 0.0)
    alive_term = np.where(followed, (1.0 - survival) ** 2 / np.where(followed, g_grid, 1.0), 0.0)
    scores: FloatArray = (death_term + alive_term).mean(axis=0)
    return scores


def integrated_brier_score(
    survival: FloatArray,
    time: FloatArray,
    event: FloatArray,
    censoring: CensoringDistribution,
    grid: FloatArray = EVAL_GRID,
) -> float:
    """The Brier score averaged over ``[grid[0], grid[-1]]`` (trapezoidal rule)."""
    scores = brier_scores(survival, time, event, censoring, grid)
    return float(_trapezoid(scores, grid) / (grid[-1] - grid[0]))


def restricted_mean_survival(survival: FloatArray, grid: FloatArray = EVAL_GRID) -> FloatArray:
    """Area under each survival curve from day 0 (S = 1) to ``grid[-1]``, in days."""
    days = np.concatenate([[0.0], grid])
    curves = np.column_stack([np.ones(survival.shape[0]), survival])
    return _trapezoid(curves, days)


def concordance(time: FloatArray, event: FloatArray, expected_survival: FloatArray) -> float:
    """Harrell's C (lifelines): how often the patient who died first was predicted to live
    less long. 1 is a perfect ordering, 0 its reverse, 0.5 chance."""
    from lifelines.utils import concordance_index

    return float(concordance_index(time, expected_survival, event_observed=event))


@dataclass(frozen=True)
class SiteScores:
    """One predictor on one site's test patients."""

    c_index: float
    ibs: float
    n_test: int


def score(
    survival: FloatArray,
    rows: SurvivalRows,
    censoring: CensoringDistribution,
    grid: FloatArray = EVAL_GRID,
) -> SiteScores:
    """C-index (by restricted mean survival) and integrated Brier score of ``survival``."""
    return SiteScores(
        c_index=concordance(rows.time, rows.event, restricted_mean_survival(survival, grid)),
        ibs=integrated_brier_score(survival, rows.time, rows.event, censoring, grid),
        n_test=rows.n,
    )


def mean_scores(per_site: Mapping[str, SiteScores]) -> SiteScores:
    """The unweighted mean over sites (each hospital counts once, as in FLamby)."""
    values = list(per_site.values())
    return SiteScores(
        c_index=float(np.mean([s.c_index for s in values])),
        ibs=float(np.mean([s.ibs for s in values])),
        n_test=sum(s.n_test for s in values),
    )
