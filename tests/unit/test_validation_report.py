"""The site's validation report: right numbers, bucketed counts, small cells never computed.

Each statistic is checked against an independent computation (a hand count, a direct
likelihood fit with scipy, a known configuration) rather than against the library that
computes it.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from fedcare import messages as keys
from fedcare.validation_report import (
    calibration,
    expected_calibration_error,
    suppressed_cells,
    validation_report,
)


def outcomes(n: int, intercept: float, slope: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions p and outcomes drawn from P(y) = sigmoid(intercept + slope · logit p)."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < expit(intercept + slope * logit)).astype(np.float64)
    return y, expit(logit)


def test_classification_metrics_at_one_half_match_a_hand_count() -> None:
    # Prepare: 4 events (3 above 0.5), 6 non-events (2 above 0.5, one exactly at 0.5).
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    p = np.array([0.9, 0.8, 0.6, 0.4, 0.7, 0.55, 0.5, 0.3, 0.2, 0.1])

    # Execute
    report = validation_report(y, p, {}, min_patients=10, min_events=4)

    # Assert: positive means p > 0.5, as eval-accuracy; AUROC by pair count (20 of 24 pairs).
    cell = {k.split("/", 1)[1]: v for k, v in report.items()}
    assert cell[keys.SENSITIVITY] == round(3 / 4, 2)
    assert cell[keys.SPECIFICITY] == round(4 / 6, 2)
    assert cell[keys.ACCURACY] == round(7 / 10, 2)
    assert cell[keys.AUROC] == round(20 / 24, 2)
    assert cell[keys.BRIER] == round(float(np.mean((p - y) ** 2)), 2)
    assert cell[keys.AUROC_CI_LOW] <= cell[keys.AUROC] <= cell[keys.AUROC_CI_HIGH]


def test_calibration_slope_and_intercept_match_a_direct_likelihood_fit() -> None:
    # Prepare: outcomes with a known miscalibration.
    y, p = outcomes(3000, intercept=0.4, slope=0.7, seed=1)
    lp = np.log(p / (1 - p))

    def nll(params: np.ndarray, slope: float | None = None) -> float:
        a, b = (params[0], params[1]) if slope is None else (params[0], slope)
        z = a + b * lp
        return float(np.sum(np.logaddexp(0, z) - y * z))

    # Execute
    intercept, slope = calibration(y, p)

    # Assert: slope of the two-parameter fit; intercept with the slope held at 1 (offset).
    assert slope == pytest.approx(minimize(nll, [0.0, 1.0]).x[1], abs=1e-3)
    assert intercept == pytest.approx(minimize(lambda a: nll(a, 1.0), [0.0]).x[0], abs=1e-3)
    assert slope == pytest.approx(0.7, abs=0.1)


def test_a_calibrated_model_has_intercept_zero_slope_one_and_small_ece() -> None:
    y, p = outcomes(20000, intercept=0.0, slope=1.0, seed=2)
    intercept, slope = calibration(y, p)
    assert intercept == pytest.approx(0.0, abs=0.05)
    assert slope == pytest.approx(1.0, abs=0.05)
    assert expected_calibration_error(y, p) < 0.02


def test_ece_is_the_weighted_gap_per_tenth() -> None:
    # Two bins: [0.1, 0.2) holds 0.15 twice (observed 1/2), [0.9, 1] holds 0.95 twice and 1.0.
    y = np.array([1, 0, 1, 1, 0], dtype=float)
    p = np.array([0.15, 0.15, 0.95, 0.95, 1.0])
    expected = 2 / 5 * abs(0.5 - 0.15) + 3 / 5 * abs(2 / 3 - (0.95 + 0.95 + 1.0) / 3)
    assert expected_calibration_error(y, p) == pytest.approx(expected)


def test_the_interval_is_reproducible_and_narrows_with_more_patients() -> None:
    small_y, small_p = outcomes(80, 0.0, 1.0, seed=3)
    large_y, large_p = outcomes(2000, 0.0, 1.0, seed=3)
    first = validation_report(small_y, small_p, {})
    again = validation_report(small_y, small_p, {})
    large = validation_report(large_y, large_p, {})

    def width(report: dict[str, float]) -> float:
        return report["all/auroc-ci-high"] - report["all/auroc-ci-low"]

    assert first == again
    assert 0.05 < width(first) < 0.35
    assert width(large) < width(first) / 3


def test_counts_are_bucketed_never_exact() -> None:
    y, p = outcomes(137, 0.0, 1.0, seed=4)
    report = validation_report(y, p, {})
    assert report["all/patients"] == 140.0
    assert report["all/events"] == keys.bucket_count(int(y.sum()))
    assert report["all/events"] % keys.COUNT_BUCKET == 0


def test_small_cells_are_absent_whatever_their_metrics() -> None:
    # Prepare: 200 patients; subgroups below each threshold and one exactly at it.
    y, p = outcomes(200, 0.0, 1.0, seed=5)
    events, non_events = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def mask(index: np.ndarray) -> np.ndarray:
        flags = np.zeros(y.shape, dtype=bool)
        flags[index] = True
        return flags

    subgroups = {
        "sex=female": mask(np.r_[events[:5], non_events[:4]]),  # 9 patients < 10
        "age=<50": mask(np.r_[events[:4], non_events[:30]]),  # 4 events < 5
        "age=65+": mask(np.r_[events[:30], non_events[:4]]),  # 4 non-events < 5
        "age=50-64": mask(np.r_[events[:5], non_events[:5]]),  # exactly 10, 5 and 5: sent
    }
    small = validation_report(y, p, subgroups, min_patients=10, min_events=5)
    at_threshold = validation_report(
        y, p, {"age=50-64": subgroups["age=50-64"]}, min_patients=10, min_events=5
    )

    # Assert: each small cell is absent, and with it every cell of its grouping (all or none:
    # "all" minus the other cells would give the small one away); a cell at the threshold is sent
    assert suppressed_cells(small, keys.VALIDATION_CELLS) == list(keys.VALIDATION_CELLS[1:])
    assert {f"all/{m}" for m in keys.VALIDATION_METRICS} == set(small)
    assert {f"age=50-64/{m}" for m in keys.VALIDATION_METRICS} <= set(at_threshold)
    assert set(small) | set(at_threshold) <= keys.ALLOWED_VALIDATION_METRICS


def test_a_grouping_is_reported_only_when_every_cell_of_it_is_large_enough() -> None:
    y, p = outcomes(200, 0.0, 1.0, seed=6)
    female = np.zeros(y.shape, dtype=bool)
    female[np.r_[np.flatnonzero(y == 1)[:5], np.flatnonzero(y == 0)[:4]]] = True  # 4 non-events
    report = validation_report(y, p, {"sex=female": female, "sex=male": ~female}, 10, 5)
    assert not any(key.startswith("sex=") for key in report)  # male alone = all - female


def test_rates_are_rounded_so_no_exact_count_comes_back() -> None:
    """Sensitivity 29/35 at full precision is that fraction exactly: the count comes back."""
    from fractions import Fraction

    y = np.r_[np.ones(35), np.zeros(10)]
    p = np.r_[np.full(29, 0.9), np.full(6, 0.1), np.full(9, 0.1), np.full(1, 0.9)]
    report = validation_report(y, p, {}, min_patients=10, min_events=5)
    assert report["all/sensitivity"] == 0.83 and report["all/accuracy"] == 0.84
    assert Fraction(report["all/sensitivity"]).limit_denominator(60) != Fraction(29, 35)
    assert Fraction(report["all/accuracy"]).limit_denominator(60) != Fraction(38, 45)
    assert all(v == round(v, 2) for v in report.values())


def test_the_whole_set_is_suppressed_too_when_it_is_small() -> None:
    y, p = outcomes(30, 0.0, 1.0, seed=6)
    assert validation_report(y, p, {}, min_patients=40, min_events=5) == {}


@pytest.mark.parametrize(
    ("y", "p", "subgroups", "match"),
    [
        ([0, 1], [0.2], {}, "one 0/1 label per probability"),
        ([0, 2], [0.2, 0.3], {}, "one 0/1 label per probability"),
        ([0, 1], [0.2, 1.5], {}, r"in \[0, 1\]"),
        ([0, 1], [0.2, np.nan], {}, r"in \[0, 1\]"),
        ([0, 1], [0.2, 0.3], {"region=north": [True, False]}, "is not one of"),
        ([0, 1], [0.2, 0.3], {"sex=male": [True]}, "1 flags for 2 rows"),
    ],
)
def test_malformed_inputs_are_refused(
    y: list[float], p: list[float], subgroups: dict[str, list[bool]], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        validation_report(y, p, subgroups)


def test_a_one_row_class_cannot_be_a_cell() -> None:
    # One non-event would make the specificity that patient's prediction; the bootstrap also
    # needs two rows of each class.
    with pytest.raises(ValueError, match="min_events must be at least 2"):
        validation_report([0, 1, 1], [0.2, 0.3, 0.9], {}, min_patients=1, min_events=1)
