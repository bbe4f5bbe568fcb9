"""C-index and IPCW integrated Brier score on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.errors import DataError
from fedcare.tasks.ncctg_lung.data import SurvivalRows
from fedcare.tasks.ncctg_lung.metrics import (
    CensoringDistribution,
    brier_scores,
    concordance,
    integrated_brier_score,
    mean_scores,
    restricted_mean_survival,
    score,
)


def test_a_perfect_ordering_scores_one_and_its_reverse_zero() -> None:
    time = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    event = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    assert concordance(time, event, expected_survival=time) == 1.0
    assert concordance(time, event, expected_survival=-time) == 0.0


def test_restricted_mean_survival_ranks_longer_curves_higher() -> None:
    grid = np.array([10.0, 20.0])
    survival = np.array([[1.0, 1.0], [0.5, 0.0], [0.0, 0.0]])
    # trapezoids from day 0 (S = 1): 10 + 10 = 20; 7.5 + 2.5 = 10; 5 + 0 = 5
    assert restricted_mean_survival(survival, grid).tolist() == [20.0, 10.0, 5.0]


def test_censoring_distribution_steps_at_censorings_only() -> None:
    # censorings at 1 (4 at risk) and 4 (1 at risk); deaths at 2 and 3 do not move G
    g = CensoringDistribution.fit(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 1.0, 0.0]))
    assert g.at(np.array([0.5, 1.0, 3.5, 4.0])).tolist() == pytest.approx([1.0, 0.75, 0.75, 0.0])
    assert g.before(np.array([1.0, 4.0])).tolist() == pytest.approx([1.0, 0.75])


def test_brier_score_of_a_known_predictor_matches_the_hand_computation() -> None:
    # Prepare: S(t) = 0.8 for everyone; G as in the test above; grid days 1.5 and 3.5
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([0.0, 1.0, 1.0, 0.0])
    g = CensoringDistribution.fit(time, event)
    grid = np.array([1.5, 3.5])
    survival = np.full((4, 2), 0.8)
    # Execute
    scores = brier_scores(survival, time, event, g, grid)
    ibs = integrated_brier_score(survival, time, event, g, grid)
    # Assert. Day 1.5: patient 1 censored before (weight 0); 2, 3, 4 followed:
    #   3 * (1 - 0.8)^2 / G(1.5) = 3 * 0.04 / 0.75 = 0.16; / 4 patients = 0.04.
    # Day 3.5: 2 and 3 died by then: 2 * 0.8^2 / G(T-) = 2 * 0.64 / 0.75; 4 followed:
    #   0.04 / G(3.5) = 0.04 / 0.75; total 1.32 / 0.75 = 1.76; / 4 = 0.44.
    assert scores.tolist() == pytest.approx([0.04, 0.44])
    assert ibs == pytest.approx((0.04 + 0.44) / 2)  # trapezoid over [1.5, 3.5], / 2 days


def test_perfect_and_uninformed_predictors_without_censoring() -> None:
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.ones(4)
    g = CensoringDistribution.fit(time, event)
    grid = np.array([1.5, 2.5, 3.5])
    truth = (time[:, None] > grid[None, :]).astype(float)
    assert integrated_brier_score(truth, time, event, g, grid) == 0.0
    assert integrated_brier_score(np.full((4, 3), 0.5), time, event, g, grid) == 0.25


def test_a_grid_past_the_censoring_support_is_refused() -> None:
    g = CensoringDistribution.fit(np.array([1.0, 2.0]), np.array([1.0, 0.0]))  # G = 0 from day 2
    with pytest.raises(DataError, match=r"reaches 0 by day 3\.5"):
        brier_scores(np.full((1, 1), 0.5), np.array([3.0]), np.array([1.0]), g, np.array([3.5]))


def test_site_scores_and_their_unweighted_mean() -> None:
    rows = SurvivalRows(
        features=np.zeros((4, 7)),
        time=np.array([1.0, 2.0, 3.0, 4.0]),
        event=np.ones(4),
    )
    g = CensoringDistribution.fit(rows.time, rows.event)
    grid = np.array([1.5, 2.5, 3.5])
    truth = (rows.time[:, None] > grid[None, :]).astype(float)
    perfect = score(truth, rows, g, grid)
    uninformed = score(np.full((4, 3), 0.5), rows, g, grid)
    assert (perfect.c_index, perfect.ibs, perfect.n_test) == (1.0, 0.0, 4)
    assert (uninformed.c_index, uninformed.ibs) == (0.5, 0.25)
    mean = mean_scores({"a": perfect, "b": uninformed})
    assert (mean.c_index, mean.ibs, mean.n_test) == (0.75, 0.125, 8)
