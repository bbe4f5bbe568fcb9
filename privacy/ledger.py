"""The site's privacy ledger: the privacy events of every run, in a hash-chained log.

``<state-dir>/privacy-ledger.jsonl`` plus ``privacy-ledger.head.json`` (see
:mod:`fedcare.chained_log` for the crash-safety and tamper-evidence rules). A damaged ledger is
refused, never read as less spending.
"""

from __future__ import annotations

from pathlib import Path

from fedcare.chained_log import ChainBrokenError, ChainedJsonLog
from fedcare.privacy.errors import LedgerCorruptError
from fedcare.privacy.events import PrivacyEvent

LEDGER_FILE = "privacy-ledger.jsonl"
HEAD_FILE = "privacy-ledger.head.json"


class PrivacyLedger:
    """A site's durable record of every noisy release."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LEDGER_FILE
        self.head_path = state_dir / HEAD_FILE
        self._log = ChainedJsonLog(self.path, self.head_path, what="event")

    def read(self) -> tuple[PrivacyEvent, ...]:
        """Every event, verified; raises :class:`LedgerCorruptError` on any damage."""
        try:
            return tuple(PrivacyEvent.from_json(e) for e in self._log.read())
        except (ChainBrokenError, KeyError, ValueError, TypeError) as exc:
            raise self._corrupt(str(exc)) from None

    def append(self, event: PrivacyEvent) -> tuple[PrivacyEvent, ...]:
        """Durably add ``event``; returns the whole ledger including it."""
        try:
            entries = self._log.append(event.to_json())
        except ChainBrokenError as exc:
            raise self._corrupt(str(exc)) from None
        return tuple(PrivacyEvent.from_json(e) for e in entries)

    def _corrupt(self, why: str) -> LedgerCorruptError:
        return LedgerCorruptError(
            f"{self.path}: privacy ledger refused: {why}; restore it from backup - fedcare will "
            "not train on an unknown privacy history"
        )
