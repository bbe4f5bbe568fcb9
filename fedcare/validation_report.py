"""The validation report a site computes on its own rows: aggregates only, small cells left out.

The same function serves a site answering the coordinator's cross-site validation
(``query.validate``, :mod:`fedcare.client.validation`) and a hospital scoring a released model
on its own new data (``fedcare site validate``), so both print and send the same numbers.

A cell is the whole set (``all``) or one subgroup. Each cell reports discrimination (AUROC with
a 95 % stratified bootstrap interval), classification at probability 0.5 (accuracy, sensitivity,
specificity), overall error (Brier score), calibration (intercept and slope of the logistic
recalibration on logit(p), expected calibration error over 10 bins), and its patients and events
rounded to a bucket, never exact. A cell with fewer than ``min_patients`` patients, or fewer than
``min_events`` events or non-events, is left out entirely: with a handful of patients (or one
non-event) the specificity or the AUROC tells who was predicted what.

Two ways around those rules are closed as well. Every rate is rounded to ``DECIMALS`` places: at
full precision a sensitivity of 0.828571... is exactly 29/35, which gives back the exact count
the bucketing hides. And a grouping's cells (``sex=...``, ``age=...``) are reported all or none:
``all`` minus ``sex=male`` would otherwise be the suppressed ``sex=female`` cell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedcare import messages as keys

# What the coordinator asks for unless told otherwise; a site raises smaller thresholds to its
# own floor (fedcare.client.validation), whatever the request says.
DEFAULT_MIN_PATIENTS = 20
DEFAULT_MIN_EVENTS = 5
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # a reproducible interval: the same rows and model give the same report
ECE_BINS = 10
THRESHOLD = 0.5
DECIMALS = 2  # every rate a report holds; finer would give back exact counts (module docstring)
_LOGIT_CLIP = 1e-6


def _logit(probability: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    p = np.clip(probability, _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.log(p / (1.0 - p))


def auroc_interval(
    y_true: npt.NDArray[np.float64], probability: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """95 % interval of the AUROC: scipy's bootstrap, resampling events and non-events apart
    (stratified, as pROC does), so no resample lacks a class; percentile method, fixed seed."""
    from scipy.stats import bootstrap, mannwhitneyu

    events = probability[y_true == 1]
    non_events = probability[y_true == 0]

    def auroc(pos: npt.NDArray[np.float64], neg: npt.NDArray[np.float64], axis: int) -> object:
        u = mannwhitneyu(pos, neg, axis=axis).statistic
        return u / (pos.shape[axis] * neg.shape[axis])

    result = bootstrap(
        (events, non_events),
        auroc,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=0.95,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def calibration(
    y_true: npt.NDArray[np.float64], probability: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """Calibration intercept and slope (Van Calster et al. 2016).

    Slope: the coefficient of logit(p) in an unpenalised logistic regression of the outcome on
    it (scikit-learn); 1 is ideal, below 1 predictions are too extreme. Intercept (calibration-in-
    the-large): ``a`` in ``logit P(y) = a + logit(p)``, the slope held at 1; 0 is ideal, above 0
    the model under-predicts. The one-parameter fit has a root of its score equation
    ``Σ y - sigmoid(a + logit p) = 0``, found by bracketing (scipy).
    """
    from scipy.optimize import brentq
    from scipy.special import expit
    from sklearn.linear_model import LogisticRegression

    lp = _logit(probability)
    fit = LogisticRegression(C=np.inf, max_iter=1000).fit(lp.reshape(-1, 1), y_true)
    slope = float(fit.coef_[0, 0])

    def score(a: float) -> float:
        return float(np.sum(y_true - expit(a + lp)))

    bound = 50.0  # beyond any real logit offset; both classes present: the root lies inside
    intercept = float(brentq(score, -bound, bound)) if 0 < y_true.mean() < 1 else math.nan
    return intercept, slope


def expected_calibration_error(
    y_true: npt.NDArray[np.float64], probability: npt.NDArray[np.float64], bins: int = ECE_BINS
) -> float:
    """Σ over equal-width probability bins of (share of rows) x |observed rate - mean p|."""
    index = np.minimum((probability * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            gap = abs(float(y_true[in_bin].mean()) - float(probability[in_bin].mean()))
            total += in_bin.mean() * gap
    return float(total)


def cell_metrics(
    y_true: npt.NDArray[np.float64], probability: npt.NDArray[np.float64]
) -> dict[str, float]:
    """Every metric of one cell (both classes present), keyed by ``fedcare.messages`` names."""
    from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score

    predicted = (probability > THRESHOLD).astype(np.float64)
    tn, fp, fn, tp = confusion_matrix(y_true, predicted, labels=[0.0, 1.0]).ravel()
    low, high = auroc_interval(y_true, probability)
    intercept, slope = calibration(y_true, probability)
    rates = {
        keys.AUROC: float(roc_auc_score(y_true, probability)),
        keys.AUROC_CI_LOW: low,
        keys.AUROC_CI_HIGH: high,
        keys.ACCURACY: float((tp + tn) / y_true.size),
        keys.SENSITIVITY: float(tp / (tp + fn)),
        keys.SPECIFICITY: float(tn / (tn + fp)),
        keys.BRIER: float(brier_score_loss(y_true, probability)),
        keys.CALIBRATION_INTERCEPT: intercept,
        keys.CALIBRATION_SLOPE: slope,
        keys.ECE: expected_calibration_error(y_true, probability),
    }
    return {name: round(value, DECIMALS) for name, value in rates.items()} | {
        keys.PATIENTS: keys.bucket_count(int(y_true.size)),
        keys.EVENTS: keys.bucket_count(int(y_true.sum())),
    }


def large_enough(y_true: npt.NDArray[np.float64], min_patients: int, min_events: int) -> bool:
    """Whether a cell may be reported: enough patients, events and non-events."""
    events = int(y_true.sum())
    return y_true.size >= min_patients and min(events, y_true.size - events) >= min_events


def validation_report(
    y_true: npt.ArrayLike,
    probability: npt.ArrayLike,
    subgroups: Mapping[str, npt.ArrayLike],
    min_patients: int = DEFAULT_MIN_PATIENTS,
    min_events: int = DEFAULT_MIN_EVENTS,
) -> dict[str, float]:
    """The report: ``{"<cell>/<metric>": value}`` for the whole set (cell ``all``) and each
    subgroup (name -> row mask) large enough to report; a smaller cell is absent altogether."""
    if min_events < 2:  # the bootstrap resamples each class; one row is not a sample
        raise ValueError(f"min_events must be at least 2, got {min_events}")
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(probability, dtype=np.float64).reshape(-1)
    if y.shape != p.shape or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"need one 0/1 label per probability; got {y.shape} and {p.shape}")
    if not (np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()):
        raise ValueError("probabilities must be finite numbers in [0, 1]")
    cells: dict[str, npt.NDArray[np.bool_]] = {keys.OVERALL_CELL: np.ones(y.shape, dtype=bool)}
    for name, mask in subgroups.items():
        if name not in keys.VALIDATION_CELLS or name == keys.OVERALL_CELL:
            raise ValueError(f"subgroup {name!r} is not one of {keys.VALIDATION_CELLS[1:]}")
        cells[name] = np.asarray(mask, dtype=bool).reshape(-1)
    for name, mask in cells.items():
        if mask.shape != y.shape:
            raise ValueError(f"subgroup {name!r}: {mask.shape[0]} flags for {y.size} rows")
    reportable = {
        name for name, mask in cells.items() if large_enough(y[mask], min_patients, min_events)
    }
    for grouping in {_grouping(name) for name in cells if name != keys.OVERALL_CELL}:
        members = {name for name in cells if _grouping(name) == grouping}
        if not members <= reportable:  # all or none: the rest would give the missing one away
            reportable -= members
    report: dict[str, float] = {}
    for name, mask in cells.items():
        if name not in reportable:
            continue  # suppressed: never computed, never sent
        for metric, value in cell_metrics(y[mask], p[mask]).items():
            report[keys.validation_key(name, metric)] = value
    return report


def _grouping(cell: str) -> str:
    """``sex`` for ``sex=female``: cells of one grouping partition the rows between them."""
    return cell.split("=", 1)[0]


def suppressed_cells(report: Mapping[str, float], cells: tuple[str, ...]) -> list[str]:
    """The cells of ``cells`` that ``report`` leaves out (too small to report)."""
    present = {key.rsplit("/", 1)[0] for key in report}
    return [cell for cell in cells if cell not in present]
