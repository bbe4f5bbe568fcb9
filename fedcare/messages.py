"""Keys of every record that crosses between coordinator and sites, and what a site may send.

One module, so server and client never disagree on a key and a reviewer can read, in one place,
the complete list of values a hospital releases.
"""

from __future__ import annotations

from typing import Final

# RecordDict keys (Flower's strategies default to "arrays"/"config"; we keep them).
ARRAYS: Final = "arrays"
CONFIG: Final = "config"
METRICS: Final = "metrics"
SITE: Final = "site"
SITE_NAME: Final = "name"

# Metric names a site may put in a reply; nothing else is ever sent.
TRAIN_LOSS: Final = "train-loss"
EVAL_LOSS: Final = "eval-loss"
EVAL_ACCURACY: Final = "eval-accuracy"
EVAL_AUROC: Final = "eval-auroc"  # NaN when the site's test set holds a single class
WEIGHT: Final = "weight"  # aggregation weight: 1.0, or training rows rounded to a bucket
ALLOWED_METRICS: Final = frozenset({TRAIN_LOSS, EVAL_LOSS, EVAL_ACCURACY, EVAL_AUROC, WEIGHT})

# Train/evaluate config keys sent by the coordinator.
TASK: Final = "task"
MODEL: Final = "model"
LOCAL_EPOCHS: Final = "local-epochs"
BATCH_SIZE: Final = "batch-size"
LEARNING_RATE: Final = "learning-rate"
SEED: Final = "seed"
WEIGHTING: Final = "weighting"
SERVER_ROUND: Final = "server-round"  # injected by Flower's strategies
PROXIMAL_MU: Final = "proximal-mu"  # injected by Flower's FedProx

COUNT_BUCKET: Final = 10


def bucket_count(count: int, bucket: int = COUNT_BUCKET) -> float:
    """``count`` rounded to the nearest multiple of ``bucket`` (at least one bucket).

    Sites report training-set sizes this way, never exactly: an exact count, diffed across
    rounds or runs, can reveal that one patient joined or left.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return float(max(bucket, bucket * round(count / bucket)))
