"""ε from the ledger matches Google's dp-accounting, recomputed from first principles."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting import rdp
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcare.config import AccountantName, RunConfig
from fedcare.privacy.accounting import (
    calibrate_noise_multiplier,
    epsilon_from_events,
    poisson_sample_rate,
)
from fedcare.privacy.events import PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from tests.flower_harness import site_context, train_message

logging.getLogger("absl").setLevel(logging.ERROR)


def _independent_epsilon(n: int, batch: int, sigma: float, steps: int, delta: float) -> float:
    """dp-accounting's RDP for Poisson-subsampled Gaussian steps at rate 1/ceil(n/B)."""
    rate = 1.0 / math.ceil(n / batch)
    accountant = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))


def test_sample_rate_is_pinned_to_opacus_rate_not_b_over_n() -> None:
    assert poisson_sample_rate(300, 32) == pytest.approx(1 / 10)
    assert poisson_sample_rate(300, 32) != pytest.approx(32 / 300)
    assert poisson_sample_rate(30, 8) == pytest.approx(1 / 4)


@pytest.mark.parametrize(
    ("site", "batch", "sigma", "rounds", "epochs"),
    [
        ("switzerland", 8, 1.5, 4, 2),  # 30 training rows, multi-round, 2 local epochs
        ("cleveland", 16, 1.0, 3, 1),  # 199 rows, multi-round
        ("va", 16, 1.5, 1, 3),  # one round of several epochs
    ],
)
def test_ledger_epsilon_matches_dp_accounting(
    tmp_path: Path,
    site_paths: dict[str, Path],
    site: str,
    batch: int,
    sigma: float,
    rounds: int,
    epochs: int,
) -> None:
    from fedcare.client.app import app

    config = RunConfig(
        dp=True, noise_multiplier=sigma, batch_size=batch, local_epochs=epochs, rounds=rounds
    )
    context = site_context(site, site_paths[site], tmp_path)
    reported = []
    for server_round in range(1, rounds + 1):
        reply = app(train_message(config, server_round), context)
        assert not reply.has_error()
        reported.append(float(reply.content["metrics"]["epsilon"]))
    events = PrivacyLedger(tmp_path).read()
    n_train = {"switzerland": 30, "cleveland": 199, "va": 85}[site]
    steps_per_epoch = math.ceil(n_train / batch)
    assert sum(e.steps for e in events) == rounds * epochs * steps_per_epoch
    delta = events[0].delta
    expected = _independent_epsilon(n_train, batch, sigma, rounds * epochs * steps_per_epoch, delta)
    assert epsilon_from_events(events, delta) == pytest.approx(expected, rel=0.02)
    assert reported[-1] == pytest.approx(expected, rel=0.02)
    assert reported == sorted(reported)  # cumulative: never resets between rounds


def test_prv_accountant_is_tighter_but_close_to_rdp() -> None:
    events = [PrivacyEvent("r", 1, 1.0, 0.1, 100, 1e-5, 1.0, "t")]
    rdp_eps = epsilon_from_events(events, 1e-5, AccountantName.RDP)
    prv_eps = epsilon_from_events(events, 1e-5, AccountantName.PRV)
    assert 0.7 * rdp_eps < prv_eps <= rdp_eps


def test_a_non_private_release_makes_epsilon_infinite() -> None:
    private = PrivacyEvent("r", 1, 1.0, 0.1, 10, 1e-5, 1.0, "t")
    leak = PrivacyEvent("r", 2, 0.0, 1.0, 0, 0.0, 0.0, "t", kind="non-private")
    assert epsilon_from_events([private, leak], 1e-5) == math.inf
    assert epsilon_from_events([], 1e-5) == 0.0


@settings(max_examples=25, deadline=None)
@given(
    sigma=st.floats(0.5, 8.0),
    extra=st.floats(0.01, 4.0),
    rate=st.floats(0.01, 0.5),
    steps=st.integers(1, 400),
)
def test_more_noise_never_gives_more_epsilon(
    sigma: float, extra: float, rate: float, steps: int
) -> None:
    def eps(s: float) -> float:
        return epsilon_from_events([PrivacyEvent("r", 1, s, rate, steps, 1e-5, 1.0, "t")], 1e-5)

    assert eps(sigma + extra) <= eps(sigma) + 1e-9


@settings(max_examples=15, deadline=None)
@given(target=st.floats(0.3, 8.0), rate=st.floats(0.02, 0.5), steps=st.integers(5, 300))
def test_calibrated_noise_meets_the_target(target: float, rate: float, steps: int) -> None:
    sigma = calibrate_noise_multiplier(target, 1e-5, rate, steps)
    spent = epsilon_from_events([PrivacyEvent("r", 1, sigma, rate, steps, 1e-5, 1.0, "t")], 1e-5)
    assert spent <= target
    assert spent >= target - 0.05  # not wastefully noisy either


def test_an_accountant_named_by_string_is_the_same_accountant() -> None:
    """ "rdp" as text must select RDP, not fall through to PRV (an identity check once did)."""
    events = [PrivacyEvent("r", 1, 1.1, 0.05, 60, 1e-5, 1.0, "t")]

    by_text = epsilon_from_events(events, 1e-5, "rdp")  # type: ignore[arg-type]

    assert by_text == epsilon_from_events(events, 1e-5, AccountantName.RDP)
    assert by_text != epsilon_from_events(events, 1e-5, AccountantName.PRV)
