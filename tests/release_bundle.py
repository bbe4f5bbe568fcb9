"""Real release bundles for tests: a heart-disease model, signed with a key made by
``fedcare pki release-key``, and raw patient rows from the embedded hospitals' files."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from fedcare.bundle import preprocessing_record
from fedcare.cli import app
from fedcare.server.release import write_bundle
from fedcare.tasks import ModelName, get_task
from fedcare.tasks.heart_disease import MODEL_INPUTS, complete_rows, encode_inputs, read_raw
from fedcare.weights import save_weights

TASK = "heart-disease"
CARD = {
    "name": "heart-risk",
    "version": "v7",
    "intended_use": "Decision support for suspected coronary artery disease in adults.",
    "task": {"name": TASK, "inputs": list(MODEL_INPUTS)},
    "sites": {"cleveland": {"patients": "200-299", "epsilon": 1.5}},
    "limitations": ["Trained on four UCI hospitals only."],
    "lineage": {"parent": None, "run": "test-run"},
}


@dataclass(frozen=True)
class ReleaseKeys:
    private_key: Path
    public_key: Path


def release_key(folder: Path) -> ReleaseKeys:
    """A release key pair made by the real command."""
    result = CliRunner().invoke(app, ["pki", "release-key", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    return ReleaseKeys(folder / "owner-release.key", folder / "owner-release.pub")


def raw_rows(site_file: Path, n: int) -> dict[str, np.ndarray]:
    """The first ``n`` complete rows of a hospital's file, as the API's raw input columns."""
    from fedcare.tasks.heart_disease import RAW_COLUMNS

    raw = complete_rows(read_raw(site_file))[:n]
    return {name: raw[:, RAW_COLUMNS.index(name)].astype(np.float32) for name in MODEL_INPUTS}


def make_bundle(
    folder: Path, keys: ReleaseKeys, site_file: Path, model: str = "mlp", seed: int = 3
) -> Path:
    """A signed bundle of a randomly initialised model with statistics of ``site_file``."""
    module = get_task(TASK).build_model(ModelName(model), seed)
    with torch.no_grad():  # random, not the seed's initial weights: a load must really happen
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.5)
    weights = folder / "weights.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(weights, module.state_dict())
    features = encode_inputs(raw_rows(site_file, 10_000))
    std = np.where(features.std(axis=0) > 0, features.std(axis=0), 1.0)
    preprocessing = preprocessing_record(TASK, model, seed, list(features.mean(axis=0)), list(std))
    return write_bundle(folder / "bundle", weights, preprocessing, CARD, keys.private_key)


def copy_bundle(bundle: Path, folder: Path) -> Path:
    """A copy to tamper with."""
    copy = folder / "copy"
    shutil.copytree(bundle, copy)
    return copy
