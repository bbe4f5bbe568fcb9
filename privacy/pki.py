"""The federation's PKI, with ``cryptography``: a CA, the coordinator's TLS certificate, and
site key pairs in the format Flower's SuperNode authentication expects.

* ``ca.crt`` / ``ca.key``: the federation's CA (EC P-384). Sites verify the coordinator with it.
* ``coordinator.crt`` / ``coordinator.key``: the SuperLink's TLS certificate, signed by the CA,
  with subject alternative names for every host name and IP address sites connect to.
* ``sites/NAME/site.key`` (OpenSSH private key) and ``site.pub`` (OpenSSH public key): the
  site's identity for SuperNode authentication; the coordinator registers the public key.

Private keys are written 0600; nothing is overwritten without ``force``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcare.atomic import write_bytes_atomic, write_json_atomic
from fedcare.errors import ConfigError

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "coordinator.crt", "coordinator.key"
SITES_DIR = "sites"
SITE_KEY, SITE_PUB = "site.key", "site.pub"
REGISTRY = "sites.json"
CURVE = ec.SECP384R1
VALIDITY = dt.timedelta(days=825)
SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class SiteKeys:
    """Where a site's key pair lives."""

    name: str
    private_key: Path
    public_key: Path


def _write_private(path: Path, data: bytes, force: bool) -> None:
    _refuse_overwrite(path, force)
    write_bytes_atomic(path, data)
    os.chmod(path, 0o600)


def _write_public(path: Path, data: bytes, force: bool) -> None:
    _refuse_overwrite(path, force)
    write_bytes_atomic(path, data)
    os.chmod(path, 0o644)


def _refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists; pass --force to replace it")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcare federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_federation(folder: Path, hosts: list[str], force: bool = False) -> list[Path]:
    """Create the CA and the coordinator's TLS certificate for ``hosts`` (names or IPs)."""
    if not hosts:
        raise ConfigError("pki init: give at least one host name or IP the sites will connect to")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(CURVE())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedcare federation CA"))
        .issuer_name(_name("fedcare federation CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(CURVE())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    folder.mkdir(parents=True, exist_ok=True)
    for path in (folder / CA_KEY, folder / CA_CERT, folder / SERVER_KEY, folder / SERVER_CERT):
        _refuse_overwrite(path, force)
    _write_private(folder / CA_KEY, _pem_key(ca_key), force)
    _write_public(folder / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), force)
    _write_private(folder / SERVER_KEY, _pem_key(server_key), force)
    _write_public(folder / SERVER_CERT, server_cert.public_bytes(serialization.Encoding.PEM), force)
    if not (folder / REGISTRY).exists() or force:
        write_json_atomic(folder / REGISTRY, {})
    return [folder / CA_CERT, folder / SERVER_CERT]


def add_site(folder: Path, name: str, force: bool = False) -> SiteKeys:
    """Create a site's key pair and register its public key in the coordinator's registry."""
    if not SITE_NAME.match(name):
        raise ConfigError(
            f"site name {name!r}: use lower-case letters, digits, '-' or '_' (at most 63)"
        )
    if not (folder / CA_CERT).exists():
        raise ConfigError(f"{folder}: no federation here; run 'fedcare pki init' first")
    key = ec.generate_private_key(CURVE())
    site_dir = folder / SITES_DIR / name
    site_dir.mkdir(parents=True, exist_ok=True)
    keys = SiteKeys(name, site_dir / SITE_KEY, site_dir / SITE_PUB)
    for path in (keys.private_key, keys.public_key):
        _refuse_overwrite(path, force)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_private(keys.private_key, private, force)
    _write_public(keys.public_key, public + f" fedcare-site-{name}\n".encode(), force)
    registry = read_registry(folder)
    registry[name] = {"public_key": str(keys.public_key.resolve())}
    write_json_atomic(folder / REGISTRY, registry)
    return keys


def read_registry(folder: Path) -> dict[str, dict[str, str]]:
    """The coordinator's registered sites: name -> public key path."""
    path = folder / REGISTRY
    if not path.exists():
        return {}
    data: dict[str, dict[str, str]] = json.loads(path.read_text())
    return data
