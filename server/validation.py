"""Checks every site update must pass before it reaches aggregation.

One broken or malicious hospital must not be able to wreck a model the others depend on: an
update with the wrong arrays, a NaN, or a norm far beyond what honest training produces is
rejected with a one-line reason (recorded in the round log and ``summary.json``), and the round
goes on with the other sites. The checks look at what a site sent, never at its data.

:func:`metric_problem` screens every metric of every reply (train and evaluate) the same way: a
non-finite or out-of-range number is the site's fault, rejected with the site named, never a
crash of the coordinator (its round log is strict JSON).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from flwr.app import ArrayRecord, RecordDict

from fedcare import messages as keys
from fedcare.config import Weighting
from fedcare.weights import UpdateMismatch, l2_norm, update_deltas


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
        expected = keys.DP_TRAIN_METRICS if self.dp else {keys.TRAIN_LOSS, keys.WEIGHT}
        sent = set(content.metric_records[keys.METRICS])
        if sent & keys.EVAL_METRICS == keys.EVAL_METRICS:  # the evaluation asked for first
            expected = expected | keys.EVAL_METRICS
        if sent != expected:
            return f"metrics {sorted(sent)}, expected {sorted(expected)}"
        update = content.array_records[keys.ARRAYS]
        try:
            local = {name: array.numpy() for name, array in update.items()}
        except Exception:
            return "the update's arrays cannot be decoded"
        try:
            norm = l2_norm(update_deltas(local, global_arrays))
        except UpdateMismatch as exc:
            return str(exc)
        if self.max_update_norm > 0 and norm > self.max_update_norm:
            return f"update norm {norm:.3g} exceeds the bound {self.max_update_norm:g}"
        return self._check_weight(content)

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


# The range every metric a site may send must lie in (inclusive).
METRIC_RANGES: dict[str, tuple[float, float]] = {
    keys.TRAIN_LOSS: (0.0, math.inf),
    keys.EVAL_LOSS: (0.0, math.inf),
    keys.EVAL_ACCURACY: (0.0, 1.0),
    keys.EVAL_AUROC: (0.0, 1.0),
    keys.EPSILON: (0.0, math.inf),
    keys.WEIGHT: (0.0, math.inf),  # its exact value: UpdateRules._check_weight
}
# The one documented non-finite value: AUROC is undefined on a single-class test set, and the
# site sends NaN for it (fedcare.messages.EVAL_AUROC).
NAN_ALLOWED = frozenset({keys.EVAL_AUROC})


def metric_problem(metrics: Mapping[str, object]) -> str | None:
    """Why this reply's metrics must be rejected (first problem), or ``None``."""
    for name, value in sorted(metrics.items()):
        if name not in METRIC_RANGES:
            return f"metric {name!r} is not on the allow-list"
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"metric {name!r} is not a number"
        if math.isnan(value) and name in NAN_ALLOWED:
            continue
        low, high = METRIC_RANGES[name]
        if not math.isfinite(value) or not low <= value <= high:
            return f"metric {name!r} = {value!r} is not a finite number in [{low:g}, {high:g}]"
    return None
