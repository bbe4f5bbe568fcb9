"""Checks every site update must pass before it reaches aggregation.

One broken or malicious hospital must not be able to wreck a model the others depend on: an
update with the wrong arrays, a NaN, or a norm far beyond what honest training produces is
rejected with a one-line reason (recorded in the round log and ``summary.json``), and the round
goes on with the other sites. The checks look at what a site sent, never at its data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from fedcare import messages as keys
from fedcare.config import Weighting


@dataclass(frozen=True)
class UpdateRules:
    """What an acceptable update looks like in this run."""

    max_update_norm: float  # bound on ||local - global||_2; 0 = no bound
    weighting: Weighting
    dp: bool  # DP rounds report epsilon, others do not

    def check(self, content: RecordDict, global_arrays: ArrayRecord) -> str | None:
        """Why this reply's update must be rejected, or ``None`` to accept it."""
        if list(content.array_records) != [keys.ARRAYS]:
            return f"array records {list(content.array_records)}, expected ['{keys.ARRAYS}']"
        if list(content.metric_records) != [keys.METRICS]:
            return f"metric records {list(content.metric_records)}, expected ['{keys.METRICS}']"
        expected = {keys.TRAIN_LOSS, keys.WEIGHT} | ({keys.EPSILON} if self.dp else set())
        sent = set(content.metric_records[keys.METRICS])
        if sent != expected:
            return f"metrics {sorted(sent)}, expected {sorted(expected)}"
        update = content.array_records[keys.ARRAYS]
        reason = _check_layout(update, global_arrays)
        if reason is None:
            reason = self._check_values(update, global_arrays)
        return reason if reason is not None else self._check_weight(content)

    def _check_values(self, update: ArrayRecord, global_arrays: ArrayRecord) -> str | None:
        squared = 0.0
        for name, array in update.items():
            try:
                values = array.numpy()
            except Exception:
                return f"array {name!r} cannot be decoded"
            if not np.isfinite(values).all():
                return f"array {name!r} holds NaN or Inf"
            delta = values.astype(np.float64) - global_arrays[name].numpy().astype(np.float64)
            squared += float(np.sum(delta * delta))
        norm = math.sqrt(squared)
        if self.max_update_norm > 0 and norm > self.max_update_norm:
            return f"update norm {norm:.3g} exceeds the bound {self.max_update_norm:g}"
        return None

    def _check_weight(self, content: RecordDict) -> str | None:
        weight = content.metric_records[keys.METRICS][keys.WEIGHT]
        if not isinstance(weight, int | float) or not math.isfinite(weight):
            return "the reply carries no valid aggregation weight"
        if self.weighting is Weighting.UNIFORM and weight != 1.0:
            return f"weight {weight:g} but this run weights every site 1"
        if self.weighting is Weighting.EXAMPLES and (
            weight < keys.COUNT_BUCKET or weight % keys.COUNT_BUCKET
        ):
            return f"weight {weight:g} is not a row count bucketed to {keys.COUNT_BUCKET}"
        return None


def _check_layout(update: ArrayRecord, global_arrays: ArrayRecord) -> str | None:
    if list(update.keys()) != list(global_arrays.keys()):
        return f"arrays {list(update.keys())} differ from the model's {list(global_arrays.keys())}"
    for name, array in update.items():
        expected = global_arrays[name]
        if tuple(array.shape) != tuple(expected.shape):
            return (
                f"array {name!r} has shape {tuple(array.shape)}, expected {tuple(expected.shape)}"
            )
        if array.dtype != expected.dtype:
            return f"array {name!r} has dtype {array.dtype}, expected {expected.dtype}"
    return None
