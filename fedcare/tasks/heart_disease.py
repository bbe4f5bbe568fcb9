"""The UCI Heart Disease task, with FLamby's Fed-Heart-Disease protocol exactly.

Protocol (FLamby, ``flamby/datasets/fed_heart_disease``): drop ``slope``, ``ca``, ``thal``; drop
rows that still have a missing value; label ``num > 0``; one-hot ``cp`` and ``restecg`` dropping
the first level (13 features); per-site stratified split with scikit-learn's
``train_test_split(test_size=1 - 0.66, train_size=0.66, random_state=43)``; each site
standardised with its own training statistics only, so no test row leaks into preprocessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from fedcare.datagate import ColumnRule, TableSchema, read_site_table
from fedcare.errors import DataError
from fedcare.tasks.base import FloatArray, LabelledRows, ModelName, SiteData

DROPPED_COLUMNS: tuple[str, ...] = ("slope", "ca", "thal")
NUMERIC_FEATURES: tuple[str, ...] = (
    "age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak",
)  # fmt: skip
# One-hot levels kept after dropping the first level (cp=1, restecg=0), as pandas'
# get_dummies(drop_first=True) does on the pooled data in FLamby.
ONE_HOT_LEVELS: dict[str, tuple[int, ...]] = {"cp": (2, 3, 4), "restecg": (1, 2)}
FEATURE_NAMES: tuple[str, ...] = NUMERIC_FEATURES + tuple(
    f"{column}_{level}" for column, levels in ONE_HOT_LEVELS.items() for level in levels
)
TRAIN_FRACTION = 0.66
SPLIT_SEED = 43
MLP_HIDDEN = 32


# HIPAA Safe Harbor: ages over 89 identify a person; 90 stands for "90 or older".
AGE_TOP_CODE = 90
# Plausible ranges of the processed UCI files; 0 marks a missing cholesterol or blood pressure
# at some sites (kept, as FLamby does). The oldest patient in the four UCI files is 77.
SCHEMA = TableSchema(
    columns=(
        ColumnRule("age", 1, 120, top_code=AGE_TOP_CODE),
        ColumnRule("sex", 0, 1, levels=(0, 1)),
        ColumnRule("cp", 1, 4, levels=(1, 2, 3, 4)),
        ColumnRule("trestbps", 0, 300),
        ColumnRule("chol", 0, 1000),
        ColumnRule("fbs", 0, 1, levels=(0, 1)),
        ColumnRule("restecg", 0, 2, levels=(0, 1, 2)),
        ColumnRule("thalach", 0, 260),
        ColumnRule("exang", 0, 1, levels=(0, 1)),
        ColumnRule("oldpeak", -10, 10),
        ColumnRule("slope", 1, 3, levels=(1, 2, 3)),
        ColumnRule("ca", 0, 3, levels=(0, 1, 2, 3)),
        ColumnRule("thal", 3, 7, levels=(3, 6, 7)),
        ColumnRule("num", 0, 4, levels=(0, 1, 2, 3, 4), missing_allowed=False),
    ),
    label="num",
    min_rows=10,
)
RAW_COLUMNS: tuple[str, ...] = SCHEMA.names  # the UCI files' 14 columns, in file order
# The raw clinical values a released model takes, one named input each (the inference API's
# inputs, in this order): the columns FLamby keeps, without the label.
MODEL_INPUTS: tuple[str, ...] = tuple(
    c for c in RAW_COLUMNS if c not in DROPPED_COLUMNS and c != SCHEMA.label
)
INPUT_RULES: dict[str, ColumnRule] = {
    rule.name: rule for rule in SCHEMA.columns if rule.name in MODEL_INPUTS
}


def feature_bounds() -> tuple[tuple[float, float], ...]:
    """Each feature's public range (``FEATURE_NAMES`` order): the data gate's limits, the age's
    top code (the gate refuses anything above it), and [0, 1] for a one-hot level."""
    bounds: list[tuple[float, float]] = []
    for name in NUMERIC_FEATURES:
        rule = INPUT_RULES[name]
        top = rule.maximum if rule.top_code is None else min(rule.maximum, rule.top_code)
        bounds.append((float(rule.minimum), float(top)))
    bounds.extend((0.0, 1.0) for levels in ONE_HOT_LEVELS.values() for _ in levels)
    return tuple(bounds)


def binary_features() -> tuple[bool, ...]:
    """Which features take only the values 0 and 1 (``FEATURE_NAMES`` order): the numeric
    columns whose only levels are 0 and 1, and every one-hot level."""
    flags = [INPUT_RULES[name].levels == (0, 1) for name in NUMERIC_FEATURES]
    flags.extend(True for levels in ONE_HOT_LEVELS.values() for _ in levels)
    return tuple(flags)


# Subgroups a validation reports (sex as coded in the UCI files: 0 female, 1 male); the names
# are fedcare.messages.VALIDATION_CELLS.
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("age=<50", -np.inf, 50.0), ("age=50-64", 50.0, 65.0), ("age=65+", 65.0, np.inf),
)  # fmt: skip


def subgroups(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Row masks of each subgroup (sex, age band) of rows given as raw columns."""
    sex = np.asarray(columns["sex"], dtype=np.float64)
    age = np.asarray(columns["age"], dtype=np.float64)
    masks = {"sex=female": sex == 0, "sex=male": sex == 1}
    masks.update({name: (age >= low) & (age < high) for name, low, high in AGE_BANDS})
    return masks


def labelled_rows(raw: np.ndarray) -> LabelledRows:
    """The complete rows of a raw table as model inputs and labels (``num > 0``)."""
    complete = complete_rows(raw)
    index = {name: i for i, name in enumerate(RAW_COLUMNS)}
    columns = {name: complete[:, index[name]].astype(np.float64) for name in MODEL_INPUTS}
    return LabelledRows(columns, (complete[:, index[SCHEMA.label]] > 0).astype(np.float64))


def read_raw(path: Path, ignore_columns: tuple[str, ...] = ()) -> np.ndarray:
    """One site's 14 declared columns through the data gate; NaN marks a missing value.

    Accepts the UCI layout (headerless, 14 columns) and CSV or Parquet files with named columns
    in any order. Any other column refuses the file unless listed in ``ignore_columns`` (never
    read); an identifier-like column refuses it even then.
    """
    return read_site_table(path, SCHEMA, ignore_columns)


def encode_inputs(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """The 13 unscaled features (``FEATURE_NAMES`` order) of rows given as raw columns.

    ``columns`` maps each of ``MODEL_INPUTS`` to one value per row, as the data gate reads
    them or as the inference API receives them; both paths encode through this function.
    """
    features = [np.asarray(columns[name], dtype=np.float64) for name in NUMERIC_FEATURES]
    for column, levels in ONE_HOT_LEVELS.items():
        values = np.asarray(columns[column], dtype=np.float64)
        features.extend((values == level).astype(np.float64) for level in levels)
    return np.stack(features, axis=1)


def complete_rows(raw: np.ndarray) -> np.ndarray:
    """The rows of a site's raw table (``RAW_COLUMNS`` order) with no missing kept value."""
    keep = [i for i, c in enumerate(RAW_COLUMNS) if c not in DROPPED_COLUMNS]
    return raw[~np.isnan(raw[:, keep]).any(axis=1)]


def flamby_features(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop FLamby's columns and incomplete rows, one-hot encode; return (X, y) unscaled."""
    complete = complete_rows(raw)
    index = {name: i for i, name in enumerate(RAW_COLUMNS)}
    features = encode_inputs({name: complete[:, index[name]] for name in MODEL_INPUTS})
    labels = (complete[:, index[SCHEMA.label]] > 0).astype(np.float64)
    return features, labels


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLamby's per-site split: stratified when each class has more than two rows."""
    levels, counts = np.unique(labels, return_counts=True)
    stratify = labels if levels.size > 1 and bool((counts > 2).all()) else None
    train_idx, test_idx = train_test_split(
        np.arange(labels.shape[0]),
        test_size=1.0 - TRAIN_FRACTION,
        train_size=TRAIN_FRACTION,
        random_state=SPLIT_SEED,
        shuffle=True,
        stratify=stratify,
    )
    return np.sort(train_idx), np.sort(test_idx)


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[FloatArray, FloatArray]:
    """Scale both sets with statistics of ``x_train`` only; constant columns are left centred."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0.0, std, 1.0)
    return (
        ((x_train - mean) / std).astype(np.float32),
        ((x_test - mean) / std).astype(np.float32),
    )


class HeartDiseaseTask:
    """Binary diagnosis of coronary artery disease (``num > 0``) from 13 routine features."""

    name = "heart-disease"
    n_features = len(FEATURE_NAMES)
    feature_names = FEATURE_NAMES

    def load_site(self, site: str, path: Path, ignore_columns: tuple[str, ...] = ()) -> SiteData:
        features, labels = flamby_features(read_raw(path, ignore_columns))
        if features.shape[0] < 2 or np.unique(labels).size < 2:
            raise DataError(
                f"{path}: site '{site}' needs complete rows of both classes to train; "
                f"found {features.shape[0]} complete row(s)"
            )
        train_idx, test_idx = split_indices(labels)
        x_train, x_test = standardise(features[train_idx], features[test_idx])
        return SiteData(
            site=site,
            x_train=x_train,
            y_train=labels[train_idx].astype(np.float32),
            x_test=x_test,
            y_test=labels[test_idx].astype(np.float32),
            feature_names=FEATURE_NAMES,
        )

    def feature_bounds(self) -> tuple[tuple[float, float], ...]:
        return feature_bounds()

    def binary_features(self) -> tuple[bool, ...]:
        return binary_features()

    def encode(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return encode_inputs(columns)

    def read_labelled(self, path: Path, ignore_columns: tuple[str, ...] = ()) -> LabelledRows:
        return labelled_rows(read_raw(path, ignore_columns))

    def split_labelled(
        self, site: str, path: Path, ignore_columns: tuple[str, ...] = ()
    ) -> tuple[LabelledRows, LabelledRows]:
        rows = self.read_labelled(path, ignore_columns)
        if rows.n < 2 or np.unique(rows.labels).size < 2:
            raise DataError(
                f"{path}: site '{site}' needs complete rows of both classes; "
                f"found {rows.n} complete row(s)"
            )
        train_idx, test_idx = split_indices(rows.labels)
        return rows.take(train_idx), rows.take(test_idx)

    def subgroups(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return subgroups(columns)

    def build_model(self, model: ModelName, seed: int) -> nn.Module:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            if model is ModelName.LOGREG:
                return nn.Linear(self.n_features, 1)
            return nn.Sequential(
                nn.Linear(self.n_features, MLP_HIDDEN),
                nn.ReLU(),
                nn.Linear(MLP_HIDDEN, 1),
            )
        finally:
            torch.random.set_rng_state(generator_state)

    def loss(self) -> nn.Module:
        return nn.BCEWithLogitsLoss()
