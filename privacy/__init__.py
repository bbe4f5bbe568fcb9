"""Privacy machinery: DP-SGD with Opacus, the privacy ledger, budgets, accounting, SecAgg+
update clipping, and PKI.

Members are imported on first use (``fedcare.lazy_exports``): reading a ledger needs no Opacus.
"""

from typing import TYPE_CHECKING

from fedcare.lazy_exports import lazy_exports

if TYPE_CHECKING:
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
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BudgetExceededError": "fedcare.privacy.errors",
        "LedgerCorruptError": "fedcare.privacy.errors",
        "PrivacyError": "fedcare.privacy.errors",
        "PrivacyEvent": "fedcare.privacy.events",
        "PrivacyLedger": "fedcare.privacy.ledger",
        "SecAggSettings": "fedcare.privacy.secure_aggregation",
        "calibrate_noise_multiplier": "fedcare.privacy.accounting",
        "clip_update": "fedcare.privacy.secure_aggregation",
        "default_delta": "fedcare.privacy.accounting",
        "epsilon_from_events": "fedcare.privacy.accounting",
        "poisson_sample_rate": "fedcare.privacy.accounting",
    },
)
