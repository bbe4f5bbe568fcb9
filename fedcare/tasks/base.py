"""What a clinical task bundles: schema, preprocessing, model factory, loss and metrics.

A task is the contract between the coordinator and every site: both build the same model from
the same name, and a site turns its own raw file into tensors the same way as every other site.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from torch import nn

from fedcare.tasks.names import ModelName

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SiteData:
    """One site's preprocessed train/test split; never leaves the site."""

    site: str
    x_train: FloatArray
    y_train: FloatArray
    x_test: FloatArray
    y_test: FloatArray
    feature_names: tuple[str, ...] = field(default=())

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


@dataclass(frozen=True)
class LabelledRows:
    """Rows as raw clinical values (one array per model input) with their 0/1 labels.

    What a released model and a validation see: the unscaled inputs, before any site's or the
    federation's standardisation. Never leaves the site.
    """

    columns: Mapping[str, npt.NDArray[np.float64]]
    labels: npt.NDArray[np.float64]

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: npt.NDArray[np.intp]) -> LabelledRows:
        """The rows at ``index``, in that order."""
        return LabelledRows({k: v[index] for k, v in self.columns.items()}, self.labels[index])


class Task(Protocol):
    """A clinical prediction task (see module docstring)."""

    name: str
    n_features: int
    feature_names: tuple[str, ...]

    def load_site(self, site: str, path: Path, ignore_columns: tuple[str, ...] = ()) -> SiteData:
        """Read, validate, preprocess and split one site's raw data file.

        ``ignore_columns``: undeclared columns the site allows in the file (its policy); they
        are never read, and still refuse the file if they look like identifiers.
        """
        ...

    def build_model(self, model: ModelName, seed: int) -> nn.Module:
        """A freshly initialised model, identical for the same ``seed``."""
        ...

    def loss(self) -> nn.Module:
        """Training loss on the model's raw outputs (logits)."""
        ...

    def feature_bounds(self) -> tuple[tuple[float, float], ...]:
        """Public (data-independent) range of each unscaled feature, in feature order.

        From the task's schema; what bounds the sensitivity of the preprocessing statistics.
        """
        ...

    def binary_features(self) -> tuple[bool, ...]:
        """Which features (in feature order) take only the values 0 and 1."""
        ...

    def encode(self, columns: Mapping[str, npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
        """The unscaled features of rows given as raw columns (one array per model input)."""
        ...

    def read_labelled(self, path: Path, ignore_columns: tuple[str, ...] = ()) -> LabelledRows:
        """Every complete row of a file (through the data gate), raw values and labels."""
        ...

    def split_labelled(
        self, site: str, path: Path, ignore_columns: tuple[str, ...] = ()
    ) -> tuple[LabelledRows, LabelledRows]:
        """The site's training and test rows, unscaled: the same split as :meth:`load_site`."""
        ...

    def subgroups(
        self, columns: Mapping[str, npt.NDArray[np.float64]]
    ) -> dict[str, npt.NDArray[np.bool_]]:
        """Subgroup name (one of ``fedcare.messages.VALIDATION_CELLS``) -> row mask."""
        ...
