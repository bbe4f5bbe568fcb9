"""The coordinator's memory of every site's signed ledger head: a ledger cannot silently go back.

Each train and evaluate reply carries the site's ledger head signed with its site key
(:mod:`fedcare.privacy.ledger_signing`). The coordinator verifies the signature with the site's
registered public key and keeps the latest accepted head per site in ``ledger-heads.json``
beside ``sites.json`` (atomic writes, across runs and restarts). A head with fewer events, a
lower ε, or the same length but another chain than the one kept is refused - the site deleted
or replaced its ledger (or started from a fresh state folder) - unless its ``resets`` count went
up: a reset the site declared (``fedcare site start --reset-ledger``), accepted with a warning
naming the site. A missing or invalid signature is refused with one opaque reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from flwr.app import ConfigRecord

from fedcare import messages as keys
from fedcare.atomic import write_json_atomic
from fedcare.errors import ConfigError
from fedcare.privacy.errors import PrivacyError
from fedcare.privacy.ledger_signing import HEAD_DELTA, LedgerHead, load_public_key, verify_head

log = logging.getLogger(__name__)

HEADS_FILE = "ledger-heads.json"
NO_HEAD = "the reply carries no signed ledger head"


def went_back(previous: LedgerHead, head: LedgerHead) -> str | None:
    """How ``head`` is behind ``previous`` (for the refusal), or ``None``."""
    if head.entries < previous.entries:
        return f"its ledger holds {head.entries} event(s), {previous.entries} before"
    if head.epsilon < previous.epsilon:
        return f"its ledger's ε is {head.epsilon:.4g}, {previous.epsilon:.4g} before"
    if head.entries == previous.entries and head.chain != previous.chain:
        return "its ledger was replaced (same length, another hash chain)"
    return None


class LedgerHeads:
    """See module docstring; ``public_keys`` maps site name -> registered public key file."""

    def __init__(self, path: Path, public_keys: Mapping[str, Path]) -> None:
        self.path = path
        self.public_keys = public_keys
        self._heads: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            stored: dict[str, dict[str, Any]] = json.loads(self.path.read_text(encoding="utf-8"))
            for entry in stored.values():
                LedgerHead.from_json(entry["head"])
        except (ValueError, KeyError, TypeError, AttributeError):
            # never read as "no heads": that would be the coordinator's own reset
            raise ConfigError(
                f"{self.path}: the sites' ledger heads are unreadable; restore it from backup"
            ) from None
        return stored

    def latest(self, site: str) -> LedgerHead | None:
        entry = self._heads.get(site)
        return LedgerHead.from_json(entry["head"]) if entry else None

    def privacy_record(self, sites: list[str]) -> dict[str, dict[str, Any]]:
        """Each of ``sites``' latest signed head as the run's privacy record: ε of the site's
        whole ledger at the heads' fixed δ, signed by the site (ε ∞ as "inf": not private)."""
        record: dict[str, dict[str, Any]] = {}
        for site in sites:
            head = self.latest(site)
            if head is not None:
                payload = head.to_json()
                record[site] = {
                    "epsilon": payload["epsilon"], "delta": HEAD_DELTA,
                    "entries": head.entries, "chain": head.chain, "time": head.time,
                    "signature": self._heads[site]["signature"],
                }  # fmt: skip
        return record

    def check(self, site: str, record: ConfigRecord | None) -> str | None:
        """Why ``site``'s reply must be refused, or ``None`` (its head is then kept)."""
        if record is None or keys.LEDGER_HEAD not in record or keys.LEDGER_SIGNATURE not in record:
            return NO_HEAD
        text, signature = record[keys.LEDGER_HEAD], record[keys.LEDGER_SIGNATURE]
        if not isinstance(text, str) or not isinstance(signature, bytes):
            return NO_HEAD
        key_path = self.public_keys.get(site)
        if key_path is None:
            return f"site {site} has no registered public key"
        try:
            head = verify_head(text, signature, load_public_key(key_path))
        except PrivacyError as exc:  # LedgerSignatureError: one opaque reason
            return str(exc)
        except (OSError, ValueError, UnsupportedAlgorithm):
            return f"the registered public key of site {site} cannot be read ({key_path})"
        if head.site != site:
            return f"its ledger head is signed for site {head.site!r}"
        previous = self.latest(site)
        declared = head.resets > (previous.resets if previous else 0)
        behind = went_back(previous, head) if previous else None
        if behind and not declared:
            return f"ledger went back: {behind}, with no declared reset"
        if declared:
            log.warning(
                "site %s declared a ledger reset (%d)%s",
                site, head.resets, f": {behind}" if behind else "",
            )  # fmt: skip
        self._heads[site] = {"head": head.to_json(), "signature": signature.hex()}
        write_json_atomic(self.path, self._heads)
        return None
