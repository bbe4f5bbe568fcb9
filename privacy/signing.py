"""Sign and verify a release bundle (a folder) with the sigstore project's ``model-signing``.

Why this package and not a home-made format: ``model-signing`` hashes every file of the folder
into an in-toto manifest, signs it as a DSSE envelope and writes a standard sigstore bundle, which
anyone can check with the package's own CLI (``model_signing verify key``) without fedcare.
fedcare uses its local elliptic-curve key mode only: offline, no transparency log, no OIDC.

The signature file lives inside the folder it signs and is left out of the manifest (signed as an
ignored path, so a verifier knows it was meant to be there). Any other file is part of the
signature: a changed byte, a missing file or an added file fails verification.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.errors import FedcareError

SIGNATURE_FILE = "model.sig"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
# The digest model-signing pairs with each curve (sigstore's protobuf specs).
_CURVE_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    256: hashes.SHA256,
    384: hashes.SHA384,
    521: hashes.SHA512,
}


class SignatureError(FedcareError):
    """A folder's signature is missing, does not verify with the given key, or its files changed."""


def _hashing_config() -> object:
    from model_signing import hashing

    config = hashing.Config()  # type: ignore[no-untyped-call]  # model-signing: no annotations
    return config.use_file_serialization(
        hashing_algorithm="sha256", allow_symlinks=False, ignore_paths=[Path(SIGNATURE_FILE)]
    )


def sign_directory(folder: Path, private_key: Path) -> Path:
    """Sign every file of ``folder`` with the EC ``private_key`` (PEM); returns the signature."""
    from model_signing import signing

    signature = folder / SIGNATURE_FILE
    try:
        config = signing.Config().use_elliptic_key_signer(  # type: ignore[no-untyped-call]
            private_key=private_key
        )
    except OSError as exc:
        raise SignatureError(
            f"{private_key}: cannot read the release key ({exc.strerror})"
        ) from None
    except (ValueError, TypeError):
        raise SignatureError(
            f"{private_key}: not an EC private key (PEM, P-256/384/521); make one with "
            "'fedcare pki release-key'"
        ) from None
    config.set_hashing_config(_hashing_config()).sign(folder, signature)  # type: ignore[arg-type]
    return signature


def verify_directory(folder: Path, public_key: Path) -> dict[str, str]:
    """Check ``folder`` against its signature and ``public_key``; return the signed sha256 of each
    file (name -> hex), so a reader can check the bytes it loads are the bytes that were signed.

    Raises :class:`SignatureError` with one line: unsigned, not signed by this key (or the
    signature was altered), or which files changed, are missing or were added since signing.
    """
    from model_signing import verifying

    signature = folder / SIGNATURE_FILE
    if not folder.is_dir():
        raise SignatureError(f"{folder}: not a folder")
    if not signature.is_file():
        raise SignatureError(f"{folder}: unsigned (no {SIGNATURE_FILE}); refuse to use it")
    try:
        config = verifying.Config().use_elliptic_key_verifier(  # type: ignore[no-untyped-call]
            public_key=public_key
        )
    except OSError as exc:
        raise SignatureError(f"{public_key}: cannot read the public key ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise SignatureError(f"{public_key}: not an EC public key (PEM)") from None
    config.set_hashing_config(_hashing_config())  # type: ignore[arg-type]
    try:
        config.verify(folder, signature)
    except Exception as exc:  # model-signing raises ValueError, InvalidSignature, ...
        signed = _signed_digests(signature, public_key)
        if signed is None:
            raise SignatureError(
                f"{folder}: its signature does not verify with {public_key} (signed by another "
                "key, or the signature was altered); refuse to use it"
            ) from None
        raise SignatureError(f"{folder}: {_changes(folder, signed)}; refuse to use it") from exc
    digests = _signed_digests(signature, public_key)
    if digests is None:  # pragma: no cover - verify() above just checked the same envelope
        raise SignatureError(f"{folder}: its signature does not verify with {public_key}")
    return digests


def _signed_digests(signature: Path, public_key: Path) -> dict[str, str] | None:
    """The files and sha256 digests the envelope signs, or None when the envelope does not
    verify with ``public_key`` (then nothing in it may be believed)."""
    try:
        envelope = json.loads(signature.read_bytes())["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        sig = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        key = serialization.load_pem_public_key(public_key.read_bytes())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return None
        digest = _CURVE_HASHES.get(key.curve.key_size)
        if digest is None or str(envelope["payloadType"]) != IN_TOTO_PAYLOAD_TYPE:
            return None
        key.verify(sig, _pae(IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(digest()))
        statement = json.loads(payload)
        return {
            str(item["name"]): str(item["digest"])
            for item in statement["predicate"]["resources"]
            if item.get("algorithm") == "sha256"
        }
    except (InvalidSignature, ValueError, KeyError, IndexError, TypeError, OSError):
        return None


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the bytes an envelope's signature covers."""
    return b" ".join(
        [f"DSSEv1 {len(payload_type)} {payload_type} {len(payload)}".encode(), payload]
    )


def _changes(folder: Path, signed: dict[str, str]) -> str:
    present = {
        p.relative_to(folder).as_posix(): p
        for p in folder.rglob("*")
        if p.is_file() and p.name != SIGNATURE_FILE
    }
    changed = [
        name
        for name, digest in sorted(signed.items())
        if name in present and hashlib.sha256(present[name].read_bytes()).hexdigest() != digest
    ]
    missing = sorted(set(signed) - set(present))
    added = sorted(set(present) - set(signed))
    parts = [f"changed since signing: {', '.join(changed)}"] if changed else []
    parts += [f"missing: {', '.join(missing)}"] if missing else []
    parts += [f"not signed: {', '.join(added)}"] if added else []
    return "; ".join(parts) or "its files do not match the signature"
