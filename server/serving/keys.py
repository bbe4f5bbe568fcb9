"""API keys for ``fedcare serve``: bearer tokens, stored only as hashes.

A token is 32 random bytes (``secrets``), printed once when it is made and never stored: the keys
file holds its name and the SHA-256 of the token. A plain hash (not a slow password hash) is
enough because a token has 256 bits of entropy; nothing can be guessed from its hash. The name is
what the access log shows, never the token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from fedcare.atomic import write_json_atomic
from fedcare.errors import ConfigError

TOKEN_PREFIX = "fck_"  # recognisable in a leaked-secret scan
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
FORMAT = 1


@dataclass(frozen=True)
class ApiKeys:
    """The hashes of the valid tokens, by name."""

    hashes: dict[str, str]  # name -> sha256 hex of the token

    def name_of(self, token: str | None) -> str | None:
        """The name of the key ``token`` is, or None; compares every hash in constant time."""
        if not token:
            return None
        digest = _hash(token)
        found = None
        for name, known in self.hashes.items():
            if hmac.compare_digest(digest, known):
                found = name
        return found

    def name_of_header(self, value: str | None) -> str | None:
        """The key name for an ``Authorization: Bearer TOKEN`` header value, or None."""
        if not value:
            return None
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.name_of(token.strip())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_keys(path: Path) -> ApiKeys:
    """The keys file, or a one-line error naming it and the fix."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        hashes = {str(k): str(v["sha256"]) for k, v in data["keys"].items()}
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no API keys file; make a key with 'fedcare serve add-key --keys {path} "
            "--name NAME'"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{path}: not a fedcare API keys file") from None
    return ApiKeys(hashes)


def add_key(path: Path, name: str) -> str:
    """Add a key called ``name`` to the keys file (made 0600 if new); returns the new token,
    which is not stored anywhere: show it once."""
    if not KEY_NAME.match(name):
        raise ConfigError(
            f"key name {name!r}: use letters, digits, '.', '-' or '_' (at most 63 characters)"
        )
    keys = read_keys(path).hashes if path.exists() else {}
    if name in keys:
        raise ConfigError(f"{path}: a key called {name!r} exists; remove it or pick another name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    keys[name] = _hash(token)
    payload = {"format": FORMAT, "keys": {k: {"sha256": v} for k, v in sorted(keys.items())}}
    write_json_atomic(path, payload)  # a mkstemp file: 0600 from its first byte
    os.chmod(path, 0o600)
    return token


def remove_key(path: Path, name: str) -> None:
    """Revoke the key called ``name`` (a running server reads the file at start only)."""
    keys = read_keys(path).hashes
    if name not in keys:
        raise ConfigError(f"{path}: no key called {name!r}; known: {', '.join(sorted(keys))}")
    del keys[name]
    payload = {"format": FORMAT, "keys": {k: {"sha256": v} for k, v in sorted(keys.items())}}
    write_json_atomic(path, payload)
