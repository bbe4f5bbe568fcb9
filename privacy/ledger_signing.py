"""The site's signed ledger head: what a site has spent, stated under its own key.

The ledger's hash chain proves only that its lines were not edited; it is unkeyed, so a site
could delete it (or start with a fresh state folder) and train on a new budget. Every reply a
site sends therefore carries a :class:`LedgerHead` - how many events its ledger holds, the last
chain hash, the cumulative ε, how many resets it declared - signed with the site key
(ECDSA-SHA384 over the head's canonical JSON). The coordinator keeps each site's latest head and
refuses one that went back (:mod:`fedcare.server.ledger_heads`); only a declared reset
(``resets`` went up) may start lower, and that reset is in the site's audit log and the
coordinator's log.

The signature binds a head to the site's key: the coordinator holds the site's own statement of
what it spent, and no other site (or the network) can make one in its name.

ε in the head is a fixed reference figure, comparable from reply to reply: RDP at
δ = :data:`HEAD_DELTA`, whatever δ the site's policy uses for its own budget. It only grows as
events are appended; ``inf`` once any release was non-private (sent as ``"inf"``: strict JSON).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.config import AccountantName
from fedcare.privacy.accounting import epsilon_from_events
from fedcare.privacy.errors import PrivacyError
from fedcare.privacy.ledger import PrivacyLedger

HEAD_DELTA = 1e-5
SIGNATURE = ec.ECDSA(hashes.SHA384())


class LedgerSignatureError(PrivacyError):
    """A ledger head whose signature does not verify (deliberately says nothing more)."""

    def __init__(self) -> None:
        super().__init__("ledger head signature invalid")


@dataclass(frozen=True)
class LedgerHead:
    """One site's ledger, summarised; see module docstring."""

    site: str
    entries: int
    chain: str
    epsilon: float
    resets: int
    time: str

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["epsilon"] = self.epsilon if math.isfinite(self.epsilon) else "inf"
        return payload

    def canonical(self) -> bytes:
        return json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> LedgerHead:
        head = cls(
            site=str(payload["site"]),
            entries=int(payload["entries"]),
            chain=str(payload["chain"]),
            epsilon=float(payload["epsilon"]),  # "inf" (see to_json) parses as math.inf
            resets=int(payload["resets"]),
            time=str(payload["time"]),
        )
        if head.entries < 0 or head.resets < 0 or math.isnan(head.epsilon) or head.epsilon < 0:
            raise ValueError(f"ledger head out of range: {payload}")
        return head


def current_head(state_dir: Path, site: str) -> LedgerHead:
    """The head of the ledger in ``state_dir`` now (verified; a damaged ledger raises)."""
    ledger = PrivacyLedger(state_dir)
    events, chain = ledger.snapshot()
    return LedgerHead(
        site=site,
        entries=len(events),
        chain=chain,
        epsilon=epsilon_from_events(events, HEAD_DELTA, AccountantName.RDP),
        resets=ledger.resets(),
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The site's EC private key (OpenSSH, as Flower's SuperNode reads it, or PEM)."""
    data = path.read_bytes()
    key = (
        serialization.load_ssh_private_key(data, password=None)
        if data.lstrip().startswith(b"-----BEGIN OPENSSH")
        else serialization.load_pem_private_key(data, password=None)
    )
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PrivacyError(f"{path}: the site key must be an EC key (fedcare site keygen)")
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A site's registered EC public key (OpenSSH one-liner or PEM)."""
    data = path.read_bytes()
    key = (
        serialization.load_pem_public_key(data)
        if data.lstrip().startswith(b"-----BEGIN")
        else serialization.load_ssh_public_key(data)
    )
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PrivacyError(f"{path}: a site's public key must be an EC key")
    return key


def sign_head(head: LedgerHead, key: ec.EllipticCurvePrivateKey) -> tuple[str, bytes]:
    """The head's canonical JSON text and its signature: what a reply carries."""
    text = head.canonical()
    return text.decode("utf-8"), key.sign(text, SIGNATURE)


def verify_head(text: str, signature: bytes, key: ec.EllipticCurvePublicKey) -> LedgerHead:
    """The head in ``text`` if ``signature`` is the key holder's; else
    :class:`LedgerSignatureError` (also for a malformed head: one opaque failure)."""
    try:
        key.verify(signature, text.encode("utf-8"), SIGNATURE)
        return LedgerHead.from_json(json.loads(text))
    except (InvalidSignature, ValueError, KeyError, TypeError):
        raise LedgerSignatureError() from None
