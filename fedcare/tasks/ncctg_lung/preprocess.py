"""Raw survival rows -> model inputs (features) and discrete-time targets.

Missing values: 60 of the 228 patients lack at least one input, 47 of them ``meal.cal``.
Dropping them (complete-case) would take a quarter of the patients and leave the smallest site
23, so a missing value is replaced by the training rows' mean instead (0 after standardisation), and
the two often-missing columns carry a 0/1 indicator so a model can learn whether missingness
itself predicts. The mean and standard deviation are the only statistics needed, the same
ones standardisation needs anyway, so a federated run later needs no extra statistic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcare.tasks.ncctg_lung.data import FloatArray, SurvivalRows
from fedcare.tasks.ncctg_lung.schema import INDICATED_MISSING, INTERVAL_EDGES, RAW_FEATURES

Float32Array = npt.NDArray[np.float32]


def encode_inputs(columns: Mapping[str, FloatArray]) -> FloatArray:
    """The unscaled features (``FEATURE_NAMES`` order) of raw columns; NaN stays NaN.

    ``sex`` (1 male, 2 female) becomes ``sex=female`` (0/1); each column in
    ``INDICATED_MISSING`` adds a 0/1 "was missing" feature after the seven inputs.
    """
    raw = [np.asarray(columns[name], dtype=np.float64) for name in RAW_FEATURES]
    encoded = [raw[0], raw[1] - 1.0, *raw[2:]]
    indicators = [
        np.isnan(np.asarray(columns[name], dtype=np.float64)).astype(np.float64)
        for name in INDICATED_MISSING
    ]
    return np.stack(encoded + indicators, axis=1)


def encode_rows(rows: SurvivalRows) -> FloatArray:
    """:func:`encode_inputs` of a set of patients."""
    return encode_inputs({name: rows.features[:, j] for j, name in enumerate(RAW_FEATURES)})


@dataclass(frozen=True)
class Scaling:
    """Per-feature mean and standard deviation of training rows (missing values left out)."""

    mean: FloatArray
    std: FloatArray

    @classmethod
    def fit(cls, rows: SurvivalRows) -> Scaling:
        """The statistics of ``rows``' encoded features; a constant or all-missing column gets
        mean 0 (if all missing) and standard deviation 1, so it is only centred."""
        encoded = encode_rows(rows)
        present = ~np.isnan(encoded)
        count = present.sum(axis=0)
        total = np.where(present, encoded, 0.0).sum(axis=0)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        deviation = np.where(present, encoded - mean, 0.0)
        variance = np.divide(
            (deviation**2).sum(axis=0), count, out=np.zeros_like(total), where=count > 0
        )
        std = np.sqrt(variance)
        return cls(mean=mean, std=np.where(std > 0.0, std, 1.0))

    def apply(self, rows: SurvivalRows) -> Float32Array:
        """Standardised features; a missing value becomes 0, the training mean."""
        scaled = (encode_rows(rows) - self.mean) / self.std
        return np.nan_to_num(scaled, nan=0.0).astype(np.float32)


def discretise(
    time: FloatArray, event: FloatArray, edges: FloatArray = INTERVAL_EDGES
) -> Float32Array:
    """Targets for the discrete-time likelihood: ``[intervals survived, died in the next]``.

    A death at time t in interval k = [e_k, e_{k+1}) survived intervals 0..k-1 and died in k:
    ``[k, 1]``. A patient censored in interval k counts as having survived it when followed
    past its midpoint (the actuarial half-interval rule, as in Gensheimer & Narasimhan's
    nnet-survival): ``[k + 1, 0]``, else ``[k, 0]``. A time at or past the last edge survived
    every interval: ``[K, 0]``.
    """
    n_intervals = edges.size - 1
    k = np.clip(np.searchsorted(edges, time, side="right") - 1, 0, n_intervals - 1)
    beyond = time >= edges[-1]
    died = (event > 0) & ~beyond
    midpoint = (edges[k] + edges[k + 1]) / 2.0
    survived = np.where(died, k, np.where(time >= midpoint, k + 1, k))
    survived = np.where(beyond, n_intervals, survived)
    return np.column_stack([survived, died]).astype(np.float32)
