"""Errors of the privacy machinery."""

from __future__ import annotations

from fedcare.errors import ExitCode, FedcareError


class PrivacyError(FedcareError):
    """Base of every privacy error (ledger, budget, calibration)."""

    exit_code = ExitCode.PRIVACY


class LedgerCorruptError(PrivacyError):
    """The privacy ledger is torn, edited or shorter than its head: refuse, never read as less."""


class BudgetExceededError(PrivacyError):
    """The next release would take the site past its own privacy budget."""
