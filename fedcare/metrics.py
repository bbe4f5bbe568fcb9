"""Binary classification metrics on logits, as FLamby reports them (accuracy at 0.5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class BinaryMetrics:
    """Aggregate metrics of one model on one labelled set; no per-patient values."""

    loss: float
    accuracy: float
    auroc: float | None


def binary_metrics(
    logits: npt.NDArray[np.floating], labels: npt.NDArray[np.floating], loss: float
) -> BinaryMetrics:
    """Accuracy at probability 0.5 (logit 0) and AUROC; AUROC is None for a one-class set."""
    from sklearn.metrics import roc_auc_score  # only evaluation pays for importing it

    predictions = (logits > 0.0).astype(np.float32)
    accuracy = float((predictions == labels).mean()) if labels.size else 0.0
    auroc = float(roc_auc_score(labels, logits)) if np.unique(labels).size == 2 else None
    return BinaryMetrics(loss=float(loss), accuracy=accuracy, auroc=auroc)
