"""The NCCTG lung task's fixed choices: columns, site rule, split, time intervals, time grid.

Every number here is a task constant chosen before looking at any model's score, so that a
site, the coordinator and a test all discretise, split and evaluate the same way. The
reasons for each value are in this folder's README.md.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedcare.datagate import ColumnRule, TableSchema

TIME = "time"  # days from enrolment to death or last follow-up
EVENT = "status"  # lifelines' load_lung: 1 = died, 0 = censored (R's survival::lung: 2 / 1)
INSTITUTION = "inst"

# The raw clinical inputs, as lifelines names them; sex is 1 = male, 2 = female.
RAW_FEATURES: tuple[str, ...] = (
    "age", "sex", "ph.ecog", "ph.karno", "pat.karno", "meal.cal", "wt.loss",
)  # fmt: skip
# Columns missing for more than 5 % of the 228 patients (meal.cal 20.6 %, wt.loss 6.1 %) get a
# 0/1 missingness indicator; the rest (at most 3 patients each) are only mean-imputed.
INDICATED_MISSING: tuple[str, ...] = ("meal.cal", "wt.loss")
FEATURE_NAMES: tuple[str, ...] = (
    "age", "sex=female", "ph.ecog", "ph.karno", "pat.karno", "meal.cal", "wt.loss",
    "meal.cal_missing", "wt.loss_missing",
)  # fmt: skip
N_FEATURES = len(FEATURE_NAMES)

# Public (data-independent) ranges: what the data gate accepts and what bounds the sensitivity
# of preprocessing statistics later. Ranges are those of the instruments (ECOG 0-5, Karnofsky
# 0-100), not of this data set; ages over 89 are refused (HIPAA Safe Harbor top code).
AGE_TOP_CODE = 90
SCHEMA = TableSchema(
    columns=(
        ColumnRule(TIME, 1, 3650, missing_allowed=False),
        ColumnRule(EVENT, 0, 1, levels=(0, 1), missing_allowed=False),
        ColumnRule("age", 18, 120, top_code=AGE_TOP_CODE),
        ColumnRule("sex", 1, 2, levels=(1, 2)),
        ColumnRule("ph.ecog", 0, 5, levels=(0, 1, 2, 3, 4, 5)),
        ColumnRule("ph.karno", 0, 100),
        ColumnRule("pat.karno", 0, 100),
        ColumnRule("meal.cal", 0, 5000),
        ColumnRule("wt.loss", -100, 100),
    ),
    label=EVENT,
    min_rows=10,
)
# The columns of a site file (one row per patient), in file order: outcome first.
SITE_COLUMNS: tuple[str, ...] = SCHEMA.names

# Sites: institutions in ascending id are added to a group until it holds at least this many
# patients; a last group still short of it joins the group before it.
MIN_SITE_PATIENTS = 30

# Per-site train/test split (scikit-learn's train_test_split, stratified by the event flag).
TEST_FRACTION = 0.3
SPLIT_SEED = 14  # issue #14

# Discrete-time model: hazard of death within each interval [e_k, e_{k+1}) days. Clinically
# readable edges (2, 4, 6, 9 months, 1, 1.5, 2 years) and a last edge beyond the longest
# follow-up (1022 days); a time at or past the last edge counts as censored there.
INTERVAL_EDGES: npt.NDArray[np.float64] = np.array(
    [0.0, 60.0, 120.0, 180.0, 270.0, 365.0, 540.0, 730.0, 1100.0]
)
N_INTERVALS = INTERVAL_EDGES.size - 1

# Evaluation grid (days) for the Brier score, its integral and the restricted mean survival
# time that ranks patients for the C-index: every 30 days up to two years, where every site's
# censoring distribution (Kaplan-Meier on its training rows) stays above zero.
EVAL_GRID: npt.NDArray[np.float64] = np.arange(30.0, 721.0, 30.0)
