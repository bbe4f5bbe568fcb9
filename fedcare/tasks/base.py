"""What a clinical task bundles: schema, preprocessing, model factory, loss and metrics.

A task is the contract between the coordinator and every site: both build the same model from
the same name, and a site turns its own raw file into tensors the same way as every other site.
"""

from __future__ import annotations

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


class Task(Protocol):
    """A clinical prediction task (see module docstring)."""

    name: str
    n_features: int

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
