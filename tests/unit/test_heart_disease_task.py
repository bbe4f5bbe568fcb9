"""The heart-disease task reproduces FLamby's Fed-Heart-Disease protocol exactly."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from opacus.validators import ModuleValidator

from fedcare.tasks import ModelName, get_task
from fedcare.tasks.heart_disease import FEATURE_NAMES, flamby_features, read_raw, split_indices

TASK = get_task("heart-disease")
# FLamby: 303/261/46/130 complete patients, split 199/104, 172/89, 30/16, 85/45.
EXPECTED = {
    "cleveland": (303, 199, 104),
    "hungarian": (261, 172, 89),
    "switzerland": (46, 30, 16),
    "va": (130, 85, 45),
}


def test_embedded_files_match_published_checksums(data_dir: Path) -> None:
    readme = (data_dir / "README.md").read_text()
    published = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    assert len(published) == 4
    for name, digest in published.items():
        assert hashlib.sha256((data_dir / name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("site", sorted(EXPECTED))
def test_row_counts_and_split_sizes(site: str, site_paths: dict[str, Path]) -> None:
    complete, n_train, n_test = EXPECTED[site]
    features, labels = flamby_features(read_raw(site_paths[site]))
    data = TASK.load_site(site, site_paths[site])
    assert features.shape[0] == labels.shape[0] == complete
    assert (data.n_train, data.n_test) == (n_train, n_test)
    assert data.x_train.shape[1] == data.x_test.shape[1] == 13


def test_total_patients_is_740(site_paths: dict[str, Path]) -> None:
    total = sum(flamby_features(read_raw(path))[0].shape[0] for path in site_paths.values())
    assert total == 740


def test_thirteen_features_after_one_hot() -> None:
    assert len(FEATURE_NAMES) == TASK.n_features == 13
    assert FEATURE_NAMES[-5:] == ("cp_2", "cp_3", "cp_4", "restecg_1", "restecg_2")
    assert not {"slope", "ca", "thal", "num"} & set(FEATURE_NAMES)


def test_one_hot_columns_encode_the_raw_levels(site_paths: dict[str, Path]) -> None:
    raw = read_raw(site_paths["cleveland"])
    features, labels = flamby_features(raw)
    cp = raw[:, 2]
    assert np.array_equal(features[:, 8], (cp == 2).astype(float))
    assert np.array_equal(features[:, 10], (cp == 4).astype(float))
    assert np.array_equal(labels, (raw[:, 13] > 0).astype(float))


def test_split_is_stratified_with_flamby_seed(site_paths: dict[str, Path]) -> None:
    _, labels = flamby_features(read_raw(site_paths["cleveland"]))
    train_idx, test_idx = split_indices(labels)
    assert not set(train_idx) & set(test_idx)
    assert abs(labels[train_idx].mean() - labels[test_idx].mean()) < 0.02
    again_train, _ = split_indices(labels)
    assert np.array_equal(train_idx, again_train)


@pytest.mark.parametrize("site", sorted(EXPECTED))
def test_standardisation_uses_training_rows_only(site: str, site_paths: dict[str, Path]) -> None:
    features, labels = flamby_features(read_raw(site_paths[site]))
    train_idx, test_idx = split_indices(labels)
    train_raw = features[train_idx]
    mean, std = train_raw.mean(axis=0), train_raw.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    data = TASK.load_site(site, site_paths[site])
    np.testing.assert_allclose(data.x_train, (train_raw - mean) / std, atol=1e-5)
    np.testing.assert_allclose(data.x_test, (features[test_idx] - mean) / std, atol=1e-5)
    # Statistics from all rows would differ: the test rows did not influence the scaling.
    all_mean = features.mean(axis=0)
    assert not np.allclose(all_mean, mean)


@pytest.mark.parametrize("model", list(ModelName))
def test_models_are_opacus_compatible_and_seeded(model: ModelName) -> None:
    first, second = TASK.build_model(model, seed=3), TASK.build_model(model, seed=3)
    assert ModuleValidator.validate(first, strict=False) == []
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())
    assert any(
        not np.array_equal(a.detach().numpy(), b.detach().numpy())
        for a, b in zip(
            first.parameters(), TASK.build_model(model, seed=4).parameters(), strict=True
        )
    )
