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
TRAIN_LOSS: Final = "train-loss"  # non-private rounds only: under DP it is an exact number
EVAL_LOSS: Final = "eval-loss"
EVAL_ACCURACY: Final = "eval-accuracy"
EVAL_AUROC: Final = "eval-auroc"  # NaN when the site's test set holds a single class
WEIGHT: Final = "weight"  # aggregation weight: 1.0, or training rows rounded to a bucket
EPSILON: Final = "epsilon"  # the site's cumulative ε from its whole ledger (DP runs only)
DP_TRAIN_METRICS: Final = frozenset({EPSILON, WEIGHT})  # all a DP training reply carries
# An evaluation of the global model, sent alone or, when a train request asks for it
# (EVALUATE_FIRST), beside the training metrics in the same reply: all three or none.
EVAL_METRICS: Final = frozenset({EVAL_LOSS, EVAL_ACCURACY, EVAL_AUROC})
ALLOWED_METRICS: Final = frozenset(
    {TRAIN_LOSS, EVAL_LOSS, EVAL_ACCURACY, EVAL_AUROC, WEIGHT, EPSILON}
)

# The site's signed ledger head, sent with every train and evaluate reply in a ConfigRecord of
# its own (fedcare.privacy.ledger_signing): the coordinator refuses a ledger that went back.
LEDGER: Final = "ledger"
LEDGER_HEAD: Final = "head"  # the head's canonical JSON text
LEDGER_SIGNATURE: Final = "signature"  # ECDSA-SHA384 by the site key over exactly that text

# A site that refuses a round replies with a Flower Error carrying one of these, nothing else.
# Failures are reported the same way, by category only: an exception's text can quote a record.
REFUSED_BUDGET: Final = "privacy-budget-exhausted"
REFUSED_DP_REQUIRED: Final = "dp-required"
REFUSED_SECAGG_REQUIRED: Final = "secure-aggregation-required"
REFUSED_APP: Final = "app-not-approved"  # sent by the site executor, not the ClientApp
REFUSED_BUSY: Final = "site-busy"  # another round held the site's training lock too long
FAILED_LEDGER: Final = "ledger-refused"
FAILED_DATA: Final = "data-invalid"
FAILED_SITE: Final = "site-error"
REFUSAL_CODES: Final = {
    REFUSED_BUDGET: 4001,
    REFUSED_DP_REQUIRED: 4002,
    REFUSED_SECAGG_REQUIRED: 4005,
    REFUSED_APP: 4006,
    REFUSED_BUSY: 4007,
    FAILED_LEDGER: 4003,
    FAILED_DATA: 4004,
    FAILED_SITE: 4099,
}

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
DP: Final = "dp"
DP_TARGET_EPSILON: Final = "dp-target-epsilon"
DP_NOISE_MULTIPLIER: Final = "dp-noise-multiplier"
DP_MAX_GRAD_NORM: Final = "dp-max-grad-norm"
DP_PLANNED_ROUNDS: Final = "dp-planned-rounds"
DP_ACCOUNTANT: Final = "dp-accountant"
# A train request with this set asks the site to evaluate the weights it received (the previous
# round's global model) before training on them, and to send that evaluation with its update:
# one exchange per round instead of two (fedcare.server.round_loop).
EVALUATE_FIRST: Final = "evaluate-first"
# The run's identity across resumes (fedcare.server.checkpoint): a resumed run is a new Flower
# run with a new run id, so a site keys its ledger events and its reply cache by this instead
# (the first Flower run's id) - a repeated train request for the same run and round is then
# recognised (fedcare.client.rounds). Absent: the site uses Flower's run id.
RUN_UID: Final = "run-uid"

# --- Cross-site validation and the federation's preprocessing statistics (issue #10) ---------
# Flower message types ("<category>.<action>"; Flower requires the action to be an identifier,
# so "feature_stats", not "feature-stats"). Neither is a training round: the allow-lists of
# train and evaluate replies above do not apply; each query reply has its own below.
FEATURE_STATS_ACTION: Final = "feature_stats"
VALIDATE_ACTION: Final = "validate"
FEATURE_STATS_QUERY: Final = f"query.{FEATURE_STATS_ACTION}"
VALIDATE_QUERY: Final = f"query.{VALIDATE_ACTION}"

# query.feature_stats: the request's config (CONFIG) carries TASK, MODEL, SEED and optionally
# FEATURE_STATS_NOISE (σ; the site's default otherwise) and DP_ACCOUNTANT; the reply's METRICS
# record holds FEATURE_SUMS alone: the site's noised sums (Σu, Σu², n) of its training rows,
# 2F+1 floats, u = each feature scaled to [0, 1] by the task's public bounds
# (fedcare.feature_stats). The release is a Gaussian mechanism, recorded in the site's ledger.
FEATURE_STATS_NOISE: Final = "feature-stats-noise-multiplier"
FEATURE_SUMS: Final = "feature-sums"
FEATURE_STATS_METRICS: Final = frozenset({FEATURE_SUMS})

# query.validate: the request carries the candidate's weights (ARRAYS) and, in CONFIG, TASK,
# MODEL, SEED, the federation's standardisation (PREPROCESSING_MEAN, PREPROCESSING_STD: one
# float per feature) and the subgroup thresholds (ints; the site raises them to its own floor).
PREPROCESSING_MEAN: Final = "preprocessing-mean"
PREPROCESSING_STD: Final = "preprocessing-std"
MIN_SUBGROUP_PATIENTS: Final = "min-subgroup-patients"
MIN_SUBGROUP_EVENTS: Final = "min-subgroup-events"
# The reply's METRICS record: "<cell>/<metric>" for each cell that is not suppressed. A cell is
# the whole test set or one subgroup; a cell with fewer patients, events or non-events than the
# thresholds is left out entirely (its absence is the only trace).
OVERALL_CELL: Final = "all"
VALIDATION_CELLS: Final = (
    OVERALL_CELL, "sex=female", "sex=male", "age=<50", "age=50-64", "age=65+",
)  # fmt: skip
AUROC: Final = "auroc"
AUROC_CI_LOW: Final = "auroc-ci-low"  # 95 % stratified bootstrap (scipy.stats.bootstrap)
AUROC_CI_HIGH: Final = "auroc-ci-high"
ACCURACY: Final = "accuracy"  # at probability > 0.5, as eval-accuracy
SENSITIVITY: Final = "sensitivity"
SPECIFICITY: Final = "specificity"
BRIER: Final = "brier"
CALIBRATION_INTERCEPT: Final = "calibration-intercept"  # calibration-in-the-large (offset)
CALIBRATION_SLOPE: Final = "calibration-slope"  # logistic recalibration on logit(p)
ECE: Final = "ece"  # expected calibration error, 10 equal-width bins
PATIENTS: Final = "patients"  # rounded to COUNT_BUCKET, never exact
EVENTS: Final = "events"  # positive labels, rounded to COUNT_BUCKET, never exact
VALIDATION_METRICS: Final = (
    AUROC, AUROC_CI_LOW, AUROC_CI_HIGH, ACCURACY, SENSITIVITY, SPECIFICITY, BRIER,
    CALIBRATION_INTERCEPT, CALIBRATION_SLOPE, ECE, PATIENTS, EVENTS,
)  # fmt: skip


def validation_key(cell: str, metric: str) -> str:
    """The reply key of ``metric`` in ``cell`` (e.g. ``sex=female/auroc``)."""
    return f"{cell}/{metric}"


ALLOWED_VALIDATION_METRICS: Final = frozenset(
    validation_key(cell, metric) for cell in VALIDATION_CELLS for metric in VALIDATION_METRICS
)

COUNT_BUCKET: Final = 10


def bucket_count(count: int, bucket: int = COUNT_BUCKET) -> float:
    """``count`` rounded to the nearest multiple of ``bucket`` (at least one bucket).

    Sites report training-set sizes this way, never exactly: an exact count, diffed across
    rounds or runs, can reveal that one patient joined or left.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return float(max(bucket, bucket * round(count / bucket)))
