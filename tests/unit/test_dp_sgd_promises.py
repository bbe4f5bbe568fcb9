"""DP-SGD with Opacus: per-sample clipping, Gaussian noise of the recorded scale, Poisson
batches at the recorded rate, one counted step per batch (an empty batch included), and
randomness that never follows the run's seeds.

Noise and sampling are seeded from OS entropy by design, so exact checks use a sample rate of 1
(every record in every batch) and sigma 0; noise is checked statistically, each with its stated
false-failure probability.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fedcare.privacy.dp_sgd import (
    BatchLoading,
    DpSgdSettings,
    GradSampleMode,
    entropy_generator,
    train_dp_sgd,
)

MODES = list(GradSampleMode)
LOADINGS = list(BatchLoading)


def records(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.float32)
    return x, y


def linear(d: int, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, 1, bias=bias)


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def reference_step(model: nn.Module, x: np.ndarray, y: np.ndarray, lr: float, clip: float) -> None:
    """One full-batch step of the mean of per-sample clipped gradients, by hand."""
    loss_fn = nn.BCEWithLogitsLoss()
    clipped = []
    for i in range(len(x)):
        model.zero_grad()
        xi, yi = torch.from_numpy(x[i : i + 1]), torch.from_numpy(y[i : i + 1]).reshape(-1, 1)
        loss_fn(model(xi), yi).backward()
        grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])  # type: ignore[union-attr]
        clipped.append(grad * min(1.0, clip / (float(grad.norm()) + 1e-6)))
    mean = torch.stack(clipped).mean(dim=0)
    with torch.no_grad():
        offset = 0
        for p in model.parameters():
            p -= lr * mean[offset : offset + p.numel()].reshape(p.shape)
            offset += p.numel()


@pytest.mark.parametrize("loading", LOADINGS)
@pytest.mark.parametrize("mode", MODES)
def test_without_noise_or_clipping_a_full_batch_is_plain_gradient_descent(
    mode: GradSampleMode, loading: BatchLoading
) -> None:
    # Prepare: sample rate 1 puts every record in every batch; sigma 0 adds no noise.
    x, y = records(9, 3)
    model, expected = linear(3), linear(3)
    settings = DpSgdSettings(0.0, 1e6, 1.0, 3, 0.5, grad_sample_mode=mode, batch_loading=loading)
    # Execute
    result = train_dp_sgd(model, nn.BCEWithLogitsLoss(), x, y, settings)
    for _ in range(3):
        reference_step(expected, x, y, lr=0.5, clip=1e6)
    # Assert
    assert result.steps == 3
    torch.testing.assert_close(flat(model), flat(expected), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_each_records_gradient_is_clipped_to_the_bound_before_averaging(
    mode: GradSampleMode,
) -> None:
    x, y = records(6, 4, seed=1)
    x[0] *= 50.0  # one record with a large gradient: batch clipping would shrink all of them
    model, expected = linear(4), linear(4)
    settings = DpSgdSettings(0.0, 0.05, 1.0, 1, 1.0, grad_sample_mode=mode)
    train_dp_sgd(model, nn.BCEWithLogitsLoss(), x, y, settings)
    reference_step(expected, x, y, lr=1.0, clip=0.05)
    torch.testing.assert_close(flat(model), flat(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", [GradSampleMode.EW, GradSampleMode.GHOST])
def test_the_noise_has_standard_deviation_sigma_times_the_bound(mode: GradSampleMode) -> None:
    """All inputs 0, so every gradient is 0 and one step moves each of 4000 weights by
    lr * noise / N, noise ~ N(0, (sigma C)^2). The sample standard deviation of 4000 draws is
    within 10 % of the truth but for p < 1e-9 (10 % is over 6 of its standard errors)."""
    n, d, sigma, clip, lr = 20, 4000, 2.0, 0.5, 1.0
    x, y = np.zeros((n, d), dtype=np.float32), np.ones(n, dtype=np.float32)
    model = linear(d, bias=False)
    before = flat(model)
    settings = DpSgdSettings(sigma, clip, 1.0, 1, lr, grad_sample_mode=mode)
    train_dp_sgd(model, nn.BCEWithLogitsLoss(), x, y, settings)
    moved = (flat(model) - before) * n / lr
    assert float(moved.std()) == pytest.approx(sigma * clip, rel=0.10)
    assert abs(float(moved.mean())) < 6 * sigma * clip / d**0.5  # centred: p < 2e-9


@pytest.mark.parametrize("loading", LOADINGS)
@pytest.mark.parametrize("mode", MODES)
def test_every_poisson_batch_counts_as_a_step_even_an_empty_one(
    mode: GradSampleMode, loading: BatchLoading
) -> None:
    """4 records at rate 1/4: 4 batches an epoch, about a third of them empty. All 40 batches
    of 10 epochs are non-empty with probability (1 - 0.75**4) ** 40 < 1e-6 (then no empty batch
    is exercised, but the test still passes)."""
    x, y = records(4, 3, seed=2)
    model = linear(3)
    before = flat(model)
    settings = DpSgdSettings(1.0, 1.0, 0.25, 10, 0.1, grad_sample_mode=mode, batch_loading=loading)
    result = train_dp_sgd(model, nn.BCEWithLogitsLoss(), x, y, settings)
    assert result.steps == 40
    after = flat(model)
    assert bool(torch.isfinite(after).all()) and not torch.equal(before, after)
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_batch_still_adds_noise(mode: GradSampleMode) -> None:
    """2 records at rate 1/2 (expected batch 1): each step is empty with probability 1/4.
    Inputs are 0, so only noise moves the 3000 weights: over 40 steps each moves by
    N(0, 40 (sigma C lr)^2) in total. The sample standard deviation is within 12 % of that but
    for p < 1e-9. Without noise on the empty steps (about 10 of 40) it would be about 13 % lower."""
    n, d, steps = 2, 3000, 40
    x, y = np.zeros((n, d), dtype=np.float32), np.ones(n, dtype=np.float32)
    model = linear(d, bias=False)
    before = flat(model)
    settings = DpSgdSettings(1.0, 1.0, 0.5, steps // 2, 1.0, grad_sample_mode=mode)
    result = train_dp_sgd(model, nn.BCEWithLogitsLoss(), x, y, settings)
    assert result.steps == steps
    moved = flat(model) - before
    assert float(moved.std()) == pytest.approx(steps**0.5, rel=0.12)


def trained_after_seeding_torch(
    x: np.ndarray, y: np.ndarray, settings: DpSgdSettings
) -> torch.Tensor:
    """A fresh model's weights after DP-SGD, with torch's global generator seeded alike first."""
    model = linear(3)
    torch.manual_seed(1234)
    train_dp_sgd(model, nn.BCEWithLogitsLoss(), x, y, settings)
    return flat(model)


def test_noise_does_not_follow_torchs_global_seed() -> None:
    """Same global seed, same data, all records in every batch: only the noise can differ.
    False failure: both rounds' noise generators get equal 63-bit seeds, p = 2**-63."""
    x, y = records(8, 3)
    settings = DpSgdSettings(1.0, 1.0, 1.0, 1, 0.1)
    first, second = (trained_after_seeding_torch(x, y, settings) for _ in range(2))
    assert not torch.equal(first, second)


@pytest.mark.parametrize("loading", LOADINGS)
def test_poisson_batches_do_not_follow_torchs_global_seed(loading: BatchLoading) -> None:
    """No noise: only which records each batch holds can differ. 40 records at rate 1/2 over
    2 steps: both runs draw the same batches with probability 2**-80."""
    x, y = records(40, 3)
    settings = DpSgdSettings(0.0, 1e6, 0.5, 1, 0.5, batch_loading=loading)
    first, second = (trained_after_seeding_torch(x, y, settings) for _ in range(2))
    assert not torch.equal(first, second)


def test_entropy_seeds_are_63_independent_random_bits() -> None:
    """64 generators: a given bit is the same in all 64 seeds with probability 2**-63, so some
    of bits 0..62 staying constant fails falsely with p < 2**-57."""
    seeds = [entropy_generator().initial_seed() for _ in range(64)]
    assert all(0 <= seed < 2**63 for seed in seeds)
    for bit in range(63):
        assert len({(seed >> bit) & 1 for seed in seeds}) == 2, f"bit {bit} never varies"


def test_the_model_is_trained_in_place() -> None:
    x, y = records(5, 2)
    model = linear(2)
    before = copy.deepcopy(model)
    train_dp_sgd(model, nn.BCEWithLogitsLoss(), x, y, DpSgdSettings(1.0, 1.0, 1.0, 1, 0.1))
    assert not torch.equal(flat(model), flat(before))
