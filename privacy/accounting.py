"""Pure privacy math: sampling rate, epsilon from events, noise calibration.

No I/O, no logging, no torch state. Opacus' accountants do the analysis (RDP by default, PRV on
request); these functions only feed them the ledger's events. Keeping them pure lets tests check
them against an independent implementation (Google's dp-accounting).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from fedcare.config import AccountantName
from fedcare.privacy.errors import PrivacyError
from fedcare.privacy.events import NON_PRIVATE_KIND, PrivacyEvent


def poisson_sample_rate(n_train: int, batch_size: int) -> float:
    """The rate Opacus' ``make_private`` samples with: ``1 / ceil(N / B)``, not ``B / N``.

    fedcare samples with this rate and records it in the ledger, so accounting always uses the
    rate the sampler really used.
    """
    if n_train < 1 or batch_size < 1:
        raise PrivacyError(f"need n_train >= 1 and batch size >= 1, got {n_train}, {batch_size}")
    return 1.0 / math.ceil(n_train / batch_size)


def poisson_steps_per_epoch(sample_rate: float) -> int:
    """Batches per epoch of Opacus' Poisson sampler (``int(1 / q)``, exactly as it computes)."""
    return int(1 / sample_rate)


def default_delta(n_train: int) -> float:
    """δ = min(1e-5, 1 / (2 n)): below 1/(2n) for every site, and 1e-5 for clinical sizes."""
    return min(1e-5, 1.0 / (2 * n_train))


def _accountant(name: AccountantName) -> Any:
    # Imported here: a site process that only evaluates never pays for importing Opacus.
    from opacus.accountants import PRVAccountant, RDPAccountant

    # By value, never identity: the string "rdp" must not silently select PRV.
    chosen = AccountantName(name)  # raises ValueError on an unknown name
    return RDPAccountant() if chosen is AccountantName.RDP else PRVAccountant()


def epsilon_from_events(
    events: Iterable[PrivacyEvent], delta: float, accountant: AccountantName = AccountantName.RDP
) -> float:
    """Cumulative ε at ``delta`` of every event (all runs, all rounds); ``inf`` if any release
    was non-private, ``0`` for an empty ledger.

    A ``gaussian`` event (one Gaussian mechanism on all rows, noise σ·Δ for L2 sensitivity Δ)
    is the subsampled Gaussian with sampling rate 1 and one step: the accountants compose it
    with the DP-SGD rounds exactly as that (its RDP curve is the Gaussian mechanism's own,
    order / (2σ²)).
    """
    history: list[tuple[float, float, int]] = []
    for event in events:
        if event.kind == NON_PRIVATE_KIND or event.noise_multiplier == 0.0:
            return math.inf
        if event.steps > 0:
            history.append((event.noise_multiplier, event.sample_rate, event.steps))
    if not history:
        return 0.0
    engine = _accountant(accountant)
    engine.history = history
    # PRV at sample rate 1 (a gaussian event) takes log(1 - q) = -inf on its way to the right
    # answer (the Gaussian mechanism's PRV); numpy's divide-by-zero warning there is noise.
    with np.errstate(divide="ignore"):
        return float(engine.get_epsilon(delta=delta))


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName = AccountantName.RDP,
) -> float:
    """Smallest σ (within Opacus' search tolerance) whose ``steps`` steps at ``sample_rate`` stay
    at or under ``target_epsilon``; raises :class:`PrivacyError` when no σ can."""
    if target_epsilon <= 0 or steps < 1:
        raise PrivacyError(f"need target epsilon > 0 and steps >= 1, got {target_epsilon}, {steps}")
    from opacus.accountants.utils import get_noise_multiplier

    try:
        sigma = get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=str(accountant),
            epsilon_tolerance=0.01,
        )
    except ValueError as exc:
        raise PrivacyError(
            f"cannot reach epsilon {target_epsilon} at delta {delta}: {exc}"
        ) from None
    return float(sigma)


SIGMA_CEILING = 1e4
SIGMA_TOLERANCE = 1e-3  # relative: within 0.1 % of the smallest σ that keeps the target


def smallest_noise_multiplier(
    epsilon_at: Callable[[float], float], target: float, lower_bound: float
) -> float | None:
    """Smallest σ ≥ ``lower_bound`` (within :data:`SIGMA_TOLERANCE`, from above) whose
    ``epsilon_at(σ)`` is at or under ``target``; ``None`` when no σ up to :data:`SIGMA_CEILING`
    is. ``epsilon_at`` must fall as σ grows (every mechanism accounted here does)."""
    if epsilon_at(lower_bound) <= target:
        return lower_bound
    low, high = lower_bound, max(lower_bound, 1e-3) * 2
    while epsilon_at(high) > target:
        low, high = high, high * 2
        if high > SIGMA_CEILING:
            return None
    while high - low > SIGMA_TOLERANCE * high:  # about a dozen accountings
        middle = (low + high) / 2
        low, high = (low, middle) if epsilon_at(middle) <= target else (middle, high)
    return high
