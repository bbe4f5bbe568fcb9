"""The site's privacy ledger: append-only, hash-chained, crash-safe, refuses to be read as less.

Layout under the site's state directory:

* ``privacy-ledger.jsonl``: one JSON event per line, each carrying ``chain`` =
  sha256(previous chain + canonical event JSON). Rewritten atomically (temp file, fsync, rename)
  on every append, so a crash leaves the previous ledger or the new one, never half a line.
* ``privacy-ledger.head.json``: the event count and last chain value, written atomically right
  after the ledger. A ledger with fewer events than its head, or whose chain disagrees with it,
  was truncated or edited and is refused; one more event than the head is a crash between the
  two writes and is accepted (counting more, never less).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fedcare.atomic import write_bytes_atomic, write_json_atomic
from fedcare.privacy.errors import LedgerCorruptError
from fedcare.privacy.events import PrivacyEvent

LEDGER_FILE = "privacy-ledger.jsonl"
HEAD_FILE = "privacy-ledger.head.json"
GENESIS = "0" * 64


def _canonical(event: PrivacyEvent) -> str:
    return json.dumps(event.to_json(), sort_keys=True, separators=(",", ":"))


def _next_chain(previous: str, event: PrivacyEvent) -> str:
    return hashlib.sha256((previous + _canonical(event)).encode("utf-8")).hexdigest()


class PrivacyLedger:
    """A site's durable record of every noisy release (see module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LEDGER_FILE
        self.head_path = state_dir / HEAD_FILE

    def read(self) -> tuple[PrivacyEvent, ...]:
        """Every event, verified; raises :class:`LedgerCorruptError` on any damage."""
        events, chains = self._read_verified()
        self._check_head(len(events), chains)
        return events

    def append(self, event: PrivacyEvent) -> tuple[PrivacyEvent, ...]:
        """Durably add ``event``; returns the whole ledger including it."""
        events, chains = self._read_verified()
        self._check_head(len(events), chains)
        chain = _next_chain(chains[-1] if chains else GENESIS, event)
        text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        line = json.dumps({**event.to_json(), "chain": chain}, sort_keys=True) + "\n"
        write_bytes_atomic(self.path, (text + line).encode("utf-8"))
        write_json_atomic(self.head_path, {"events": len(events) + 1, "chain": chain})
        return (*events, event)

    def _read_verified(self) -> tuple[tuple[PrivacyEvent, ...], list[str]]:
        if not self.path.exists():
            return (), []
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raise self._corrupt("its last line is incomplete (torn write)")
        events: list[PrivacyEvent] = []
        chains: list[str] = []
        previous = GENESIS
        for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
            try:
                payload: dict[str, Any] = json.loads(line)
                chain = str(payload.pop("chain"))
                event = PrivacyEvent.from_json(payload)
            except (ValueError, KeyError, TypeError) as exc:
                raise self._corrupt(f"line {number} is not a valid event ({exc})") from None
            if _next_chain(previous, event) != chain:
                raise self._corrupt(f"line {number} was edited or reordered (hash chain broken)")
            events.append(event)
            chains.append(chain)
            previous = chain
        return tuple(events), chains

    def _check_head(self, count: int, chains: list[str]) -> None:
        if not self.head_path.exists():
            if count:
                raise self._corrupt(f"{HEAD_FILE} is missing")
            return
        try:
            head = json.loads(self.head_path.read_text(encoding="utf-8"))
            expected, chain = int(head["events"]), str(head["chain"])
        except (ValueError, KeyError, TypeError):
            raise self._corrupt(f"{HEAD_FILE} is unreadable") from None
        if count < expected:
            raise self._corrupt(f"it holds {count} event(s) but its head recorded {expected}")
        if expected and chains[expected - 1] != chain:
            raise self._corrupt("its events disagree with the head's hash")
        if count > expected + 1:
            raise self._corrupt(f"it holds {count} event(s), more than head {expected} + 1")

    def _corrupt(self, why: str) -> LedgerCorruptError:
        return LedgerCorruptError(
            f"{self.path}: privacy ledger refused: {why}; restore it from backup - fedcare will "
            "not train on an unknown privacy history"
        )
