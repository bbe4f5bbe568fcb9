"""The site's privacy ledger: the privacy events of every run, in a hash-chained log.

``<state-dir>/privacy-ledger.jsonl`` plus ``privacy-ledger.head.json`` (see
:mod:`fedcare.chained_log` for the crash-safety and tamper-evidence rules). A damaged ledger is
refused, never read as less spending.

The chain is unkeyed, so a site could delete both files and start with a fresh budget; what
stops that going unseen is the signed ledger head each reply carries
(:mod:`fedcare.privacy.ledger_signing`), which the coordinator remembers. A site that truly
starts over declares it: :func:`reset_ledger` (``fedcare site start --reset-ledger``) moves the
old ledger aside, never deleting it, and counts the reset in ``privacy-ledger.resets.json``;
the count is part of the signed head, so the coordinator sees every declared reset.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from fedcare.atomic import write_json_atomic
from fedcare.chained_log import GENESIS, ChainBrokenError, ChainedJsonLog
from fedcare.errors import FedcareError
from fedcare.privacy.errors import LedgerCorruptError
from fedcare.privacy.events import PrivacyEvent

LEDGER_FILE = "privacy-ledger.jsonl"
HEAD_FILE = "privacy-ledger.head.json"
RESETS_FILE = "privacy-ledger.resets.json"


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
        except (ChainBrokenError, KeyError, ValueError, TypeError, FedcareError) as exc:
            raise self._corrupt(str(exc)) from None

    def append(self, event: PrivacyEvent) -> tuple[PrivacyEvent, ...]:
        """Durably add ``event``; returns the whole ledger including it."""
        try:
            entries = self._log.append(event.to_json())
        except ChainBrokenError as exc:
            raise self._corrupt(str(exc)) from None
        return tuple(PrivacyEvent.from_json(e) for e in entries)

    def snapshot(self) -> tuple[tuple[PrivacyEvent, ...], str]:
        """Every event (verified) and the chain hash of the last one (``GENESIS`` if none)."""
        events = self.read()
        if not events:
            return events, GENESIS
        last_line = self.path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        return events, str(json.loads(last_line)["chain"])

    def resets(self) -> int:
        """How many times this site declared a ledger reset (0 if never)."""
        path = self.state_dir / RESETS_FILE
        if not path.exists():
            return 0
        try:
            return int(json.loads(path.read_text(encoding="utf-8"))["resets"])
        except (ValueError, KeyError, TypeError):
            raise self._corrupt(f"{RESETS_FILE} is unreadable") from None

    def _corrupt(self, why: str) -> LedgerCorruptError:
        return LedgerCorruptError(
            f"{self.path}: privacy ledger refused: {why}; restore it from backup - fedcare will "
            "not train on an unknown privacy history"
        )


@dataclass(frozen=True)
class LedgerReset:
    """What :func:`reset_ledger` did: where the old ledger went, and the new reset count."""

    moved_to: Path | None  # None when there was no ledger to move
    resets: int


def reset_ledger(state_dir: Path) -> LedgerReset:
    """Start a new ledger: move the old one aside (never delete) and count the reset.

    The old files become ``privacy-ledger.reset-<UTC time>.jsonl`` (and ``.head.json``) in the
    same folder, so the site can still show what it spent before.
    """
    ledger = PrivacyLedger(state_dir)
    resets = ledger.resets() + 1
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"privacy-ledger.reset-{stamp}"
    suffix = 1
    while (state_dir / f"{base}.jsonl").exists() or (state_dir / f"{base}.head.json").exists():
        base = f"privacy-ledger.reset-{stamp}.{suffix}"
        suffix += 1
    moved_to: Path | None = None
    if ledger.path.exists():
        moved_to = ledger.path.rename(state_dir / f"{base}.jsonl")
    if ledger.head_path.exists():
        ledger.head_path.rename(state_dir / f"{base}.head.json")
    write_json_atomic(state_dir / RESETS_FILE, {"resets": resets})
    return LedgerReset(moved_to, resets)
