"""The discrete-time survival models: hand-checked loss, Opacus per-patient gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader, TensorDataset

from fedcare.errors import ConfigError
from fedcare.tasks.names import ModelName
from fedcare.tasks.ncctg_lung.model import (
    DiscreteHazardNLL,
    build_model,
    predict_survival,
    survival_at_edges,
)
from fedcare.tasks.ncctg_lung.preprocess import discretise
from fedcare.tasks.ncctg_lung.schema import INTERVAL_EDGES, N_FEATURES, N_INTERVALS


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_loss_is_the_hand_computed_negative_log_likelihood() -> None:
    # Prepare: three intervals; hazards h = sigmoid(logit) per patient
    logits = [[-1.0, 0.5, 2.0], [0.3, -0.7, 1.1], [1.5, 0.0, -2.0], [-0.2, -0.4, -0.6]]
    targets = [[1, 1], [2, 0], [0, 0], [3, 0]]
    h = [[_sigmoid(z) for z in row] for row in logits]
    expected = [
        -(math.log(1 - h[0][0]) + math.log(h[0][1])),  # died in interval 1
        -(math.log(1 - h[1][0]) + math.log(1 - h[1][1])),  # censored after two intervals
        0.0,  # censored before completing any interval: no information
        -sum(math.log(1 - p) for p in h[3]),  # followed past the last edge
    ]
    logits_t = torch.tensor(logits, dtype=torch.float64)
    targets_t = torch.tensor(targets, dtype=torch.float64)
    # Execute
    per_patient = DiscreteHazardNLL(reduction="none")(logits_t, targets_t)
    mean = DiscreteHazardNLL(reduction="mean")(logits_t, targets_t)
    total = DiscreteHazardNLL(reduction="sum")(logits_t, targets_t)
    # Assert
    assert per_patient.tolist() == pytest.approx(expected, rel=1e-12)
    assert mean.item() == pytest.approx(sum(expected) / 4, rel=1e-12)
    assert total.item() == pytest.approx(sum(expected), rel=1e-12)


def test_an_unknown_reduction_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of none, mean, sum"):
        DiscreteHazardNLL(reduction="max")  # type: ignore[arg-type]  # the wrong value on purpose


@pytest.mark.parametrize("name", list(ModelName))
def test_models_pass_opacus_strict_validation_and_are_seeded(name: ModelName) -> None:
    state = torch.random.get_rng_state()
    model = build_model(name, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator untouched
    assert ModuleValidator.validate(model, strict=True) == []
    again, other = build_model(name, seed=3), build_model(name, seed=4)
    pairs = list(zip(model.parameters(), again.parameters(), other.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b, _ in pairs)
    assert not all(torch.equal(a, c) for a, _, c in pairs)
    assert model(torch.zeros(5, N_FEATURES)).shape == (5, N_INTERVALS)


@pytest.mark.parametrize("name", list(ModelName))
def test_dp_sgd_clips_per_patient(name: ModelName) -> None:
    # Prepare: five patients, one row each, a mix of deaths and censorings
    n = 5
    x = torch.randn(n, N_FEATURES)
    time = np.array([30.0, 200.0, 400.0, 800.0, 1050.0])
    event = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    y = torch.from_numpy(discretise(time, event))
    reference = build_model(name, seed=0)
    expected = []
    for i in range(n):  # each patient's own gradient, one patient at a time
        reference.zero_grad()
        DiscreteHazardNLL("sum")(reference(x[i : i + 1]), y[i : i + 1]).backward()
        expected.append([p.grad.clone() for p in reference.parameters() if p.grad is not None])
    model = build_model(name, seed=0)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(x, y), batch_size=n)
    private, optimiser, loader = PrivacyEngine().make_private(
        module=model,
        optimizer=optimiser,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
    )
    loss_fn = DiscreteHazardNLL(reduction="mean")
    # Execute: one DP-SGD step
    (xb, yb) = next(iter(loader))
    loss_fn(private(xb), yb).backward()
    grad_samples = [p.grad_sample.clone() for p in private.parameters()]
    optimiser.step()
    # Assert: one per-sample gradient per patient, each that patient's own
    for k, grad_sample in enumerate(grad_samples):
        assert grad_sample.shape[0] == n
        for i in range(n):
            assert torch.allclose(grad_sample[i], expected[i][k], atol=1e-6)


def test_survival_starts_at_one_and_never_rises() -> None:
    logits = torch.randn(4, N_INTERVALS)
    at_edges = survival_at_edges(logits)
    assert at_edges.shape == (4, N_INTERVALS + 1)
    assert torch.all(at_edges[:, 0] == 1.0)
    assert torch.all(at_edges[:, 1:] <= at_edges[:, :-1])
    model = build_model(ModelName.LOGREG, seed=0)
    x = np.random.default_rng(0).normal(size=(4, N_FEATURES)).astype(np.float32)
    on_edges = predict_survival(model, x, INTERVAL_EDGES)
    with torch.no_grad():
        direct = survival_at_edges(model(torch.from_numpy(x))).numpy()
    assert np.allclose(on_edges, direct, atol=1e-6)  # interpolation is exact at the edges
