"""Privacy machinery: DP-SGD with Opacus, the privacy ledger, budgets, accounting, SecAgg+
update clipping, and PKI."""

from fedcare.privacy.accounting import (
    calibrate_noise_multiplier,
    default_delta,
    epsilon_from_events,
    poisson_sample_rate,
)
from fedcare.privacy.errors import BudgetExceededError, LedgerCorruptError, PrivacyError
from fedcare.privacy.events import PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.privacy.secure_aggregation import SecAggSettings, clip_update

__all__ = [
    "BudgetExceededError",
    "LedgerCorruptError",
    "PrivacyError",
    "PrivacyEvent",
    "PrivacyLedger",
    "SecAggSettings",
    "calibrate_noise_multiplier",
    "clip_update",
    "default_delta",
    "epsilon_from_events",
    "poisson_sample_rate",
]
