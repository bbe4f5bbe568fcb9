"""A minimal fedcare task plugin: breast-cancer diagnosis (malignant or benign) from five
measurements of a fine-needle aspirate, on the Wisconsin Diagnostic Breast Cancer data.

Everything fedcare needs from a task is in this one module (README.md beside it):

* the class named by the ``fedcare.tasks`` entry point in ``pyproject.toml``, which implements
  :class:`fedcare.tasks.base.Task` (schema through the data gate, split, preprocessing, model
  factories, loss, public feature bounds for the federation's statistics, subgroups);
* four module-level names a release bundle reads to serve the model on raw values:
  ``MODEL_INPUTS``, ``INPUT_RULES``, ``FEATURE_NAMES`` and ``encode_inputs``.

Every site and the coordinator build the model from the same name and seed, and every site turns
its own file into features with the same code: that is why a site installs this package itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from fedcare.datagate import ColumnRule, TableSchema, read_site_table
from fedcare.errors import DataError
from fedcare.tasks.base import LabelledRows, SiteData
from fedcare.tasks.names import ModelName

TASK_NAME = "example-breast-cancer"  # the entry point's name in pyproject.toml
LABEL = "malignant"  # 1 = malignant, 0 = benign
# The data gate's allow-list: the only columns a site file may hold. The ranges are public (wide
# around the published data's) and bound what one patient can change in the federation's
# feature statistics; a value outside them refuses the file, naming the column.
SCHEMA = TableSchema(
    columns=(
        ColumnRule("mean_radius", 0, 40),
        ColumnRule("mean_texture", 0, 60),
        ColumnRule("mean_smoothness", 0, 0.3),
        ColumnRule("worst_area", 0, 6000),
        ColumnRule("worst_concave_points", 0, 0.5),
        ColumnRule(LABEL, 0, 1, levels=(0, 1), missing_allowed=False),
    ),
    label=LABEL,
    min_rows=20,
)
# A release takes these raw values, one named input each, in this order; the features are the
# inputs themselves (no encoding beyond standardisation).
MODEL_INPUTS: tuple[str, ...] = tuple(n for n in SCHEMA.names if n != LABEL)
INPUT_RULES: dict[str, ColumnRule] = {r.name: r for r in SCHEMA.columns if r.name in MODEL_INPUTS}
FEATURE_NAMES: tuple[str, ...] = MODEL_INPUTS
TEST_FRACTION = 0.3
SPLIT_SEED = 14  # fixed: a site's split is the same in every run and at every step
MLP_HIDDEN = 16

Array = npt.NDArray[np.float64]


def encode_inputs(columns: Mapping[str, Array]) -> Array:
    """The unscaled features of rows given as raw columns: as the data gate reads them at a
    site, and as the inference API receives them from a released model's caller."""
    return np.stack([np.asarray(columns[n], dtype=np.float64) for n in FEATURE_NAMES], axis=1)


def _split(labels: Array) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """A fixed stratified train/test split of one site's rows."""
    train, test = train_test_split(
        np.arange(labels.shape[0]), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
        stratify=labels,
    )  # fmt: skip
    return np.sort(train), np.sort(test)


class BreastCancerTask:
    """Binary diagnosis (``malignant``) from five aspirate measurements; one row per patient,
    so a DP sample is a patient."""

    name = TASK_NAME
    n_features = len(FEATURE_NAMES)
    feature_names = FEATURE_NAMES

    def read_labelled(self, path: Path, ignore_columns: tuple[str, ...] = ()) -> LabelledRows:
        raw = read_site_table(path, SCHEMA, ignore_columns)  # refuses a bad file, all at once
        raw = raw[~np.isnan(raw).any(axis=1)]  # complete rows only
        columns = {n: raw[:, SCHEMA.names.index(n)] for n in MODEL_INPUTS}
        return LabelledRows(columns, raw[:, SCHEMA.names.index(LABEL)])

    def split_labelled(
        self, site: str, path: Path, ignore_columns: tuple[str, ...] = ()
    ) -> tuple[LabelledRows, LabelledRows]:
        rows = self.read_labelled(path, ignore_columns)
        if np.bincount(rows.labels.astype(np.intp), minlength=2).min() < 2:
            raise DataError(f"{path}: site '{site}' needs two complete rows of each class")
        train, test = _split(rows.labels)
        return rows.take(train), rows.take(test)

    def load_site(self, site: str, path: Path, ignore_columns: tuple[str, ...] = ()) -> SiteData:
        """The split standardised with the site's own training statistics (``preprocessing =
        "site"``); with ``"federation"`` fedcare standardises ``encode`` 's output itself."""
        train, test = self.split_labelled(site, path, ignore_columns)
        x_train, x_test = encode_inputs(train.columns), encode_inputs(test.columns)
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return SiteData(
            site=site,
            x_train=((x_train - mean) / std).astype(np.float32),
            y_train=train.labels.astype(np.float32),
            x_test=((x_test - mean) / std).astype(np.float32),
            y_test=test.labels.astype(np.float32),
            feature_names=FEATURE_NAMES,
        )

    def encode(self, columns: Mapping[str, Array]) -> Array:
        return encode_inputs(columns)

    def feature_bounds(self) -> tuple[tuple[float, float], ...]:
        return tuple(
            (float(INPUT_RULES[n].minimum), float(INPUT_RULES[n].maximum)) for n in FEATURE_NAMES
        )

    def binary_features(self) -> tuple[bool, ...]:
        return tuple(False for _ in FEATURE_NAMES)

    def subgroups(self, columns: Mapping[str, Array]) -> dict[str, npt.NDArray[np.bool_]]:
        """No subgroup: the data carry neither sex nor age (fedcare.messages.VALIDATION_CELLS);
        a validation then reports the overall cell only."""
        return {}

    def build_model(self, model: ModelName, seed: int) -> nn.Module:
        """Logistic regression or a small MLP, identical for the same seed, Opacus-compatible;
        the global torch generator is left as it was."""
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            if model is ModelName.LOGREG:
                return nn.Linear(self.n_features, 1)
            return nn.Sequential(
                nn.Linear(self.n_features, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, 1)
            )
        finally:
            torch.random.set_rng_state(state)

    def loss(self) -> nn.Module:
        """Per-row binary cross-entropy on logits: per patient, as DP-SGD clips."""
        return nn.BCEWithLogitsLoss()
