"""The federation's PKI, with ``cryptography``: a CA, the coordinator's TLS certificate, and
site key pairs in the format Flower's SuperNode authentication expects.

Keys live where they belong:

* ``ca.crt`` (coordinator folder): the federation's CA (EC P-384). Sites verify the coordinator
  with it. Its private key ``ca.key`` is written to a separate folder (default ``offline-ca/``)
  to be moved off the coordinator host: signing happens only at ``pki init``, never at start.
* ``coordinator.crt`` / ``coordinator.key``: the SuperLink's TLS certificate, signed by the CA,
  with subject alternative names for every host name and IP address sites connect to, plus
  ``127.0.0.1`` and ``localhost`` (the coordinator's own front door reaches it on loopback).
* ``site.key`` (OpenSSH private key) and ``site.pub``: created at the site by
  ``fedcare site keygen``; the private key never leaves the site. The owner registers only the
  public key (``pki add-site NAME --public-key site.pub`` -> ``sites/NAME/site.pub``).

Private keys are 0600 in 0700 folders; nothing is overwritten without ``force``.
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
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcare.atomic import write_bytes_atomic, write_json_atomic
from fedcare.errors import ConfigError
from fedcare.processes import private_dir

CA_CERT, CA_KEY = "ca.crt", "ca.key"
OFFLINE_CA_DIR = "offline-ca"
SERVER_CERT, SERVER_KEY = "coordinator.crt", "coordinator.key"
SITES_DIR = "sites"
SITE_KEY, SITE_PUB = "site.key", "site.pub"
REGISTRY = "sites.json"
CURVE = ec.SECP384R1
SITE_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)  # what Flower's registration accepts
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
VALIDITY = dt.timedelta(days=825)
SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PRIVATE_FILE_MODE, PUBLIC_FILE_MODE = 0o600, 0o644


@dataclass(frozen=True)
class SiteKeys:
    """Where a site's key pair lives (at the site)."""

    name: str
    private_key: Path
    public_key: Path
    public_line: str


@dataclass(frozen=True)
class Federation:
    """What ``pki init`` wrote: public files in the coordinator folder, the CA key apart."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    ca_key: Path


def _write_private(path: Path, data: bytes, force: bool) -> None:
    _refuse_overwrite(path, force)
    write_bytes_atomic(path, data)  # a mkstemp file: 0600 from its first byte
    os.chmod(path, PRIVATE_FILE_MODE)


def _write_public(path: Path, data: bytes, force: bool) -> None:
    _refuse_overwrite(path, force)
    write_bytes_atomic(path, data)
    os.chmod(path, PUBLIC_FILE_MODE)


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


def _check_site_name(name: str) -> None:
    if not SITE_NAME.match(name):
        raise ConfigError(
            f"site name {name!r}: use lower-case letters, digits, '-' or '_' (at most 63)"
        )


def init_federation(
    folder: Path, hosts: list[str], force: bool = False, ca_key_dir: Path | None = None
) -> Federation:
    """Create the CA and the coordinator's TLS certificate for ``hosts`` (names or IPs) and
    loopback; the CA key goes to ``ca_key_dir`` (default ``folder/offline-ca``), to be moved
    offline: the coordinator never needs it to run."""
    if not hosts:
        raise ConfigError("pki init: give at least one host name or IP the sites will connect to")
    ca_dir = ca_key_dir if ca_key_dir is not None else folder / OFFLINE_CA_DIR
    federation = Federation(
        folder / CA_CERT, folder / SERVER_CERT, folder / SERVER_KEY, ca_dir / CA_KEY
    )
    for path in (federation.ca_key, federation.ca_cert, federation.server_key):
        _refuse_overwrite(path, force)
    _refuse_overwrite(federation.server_cert, force)
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
    for host in dict.fromkeys([*hosts, *LOOPBACK_HOSTS]):  # in order, once each
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
    private_dir(folder)
    private_dir(ca_dir)
    _write_private(federation.ca_key, _pem_key(ca_key), force)
    _write_public(federation.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), force)
    _write_private(federation.server_key, _pem_key(server_key), force)
    server_pem = server_cert.public_bytes(serialization.Encoding.PEM)
    _write_public(federation.server_cert, server_pem, force)
    if not (folder / REGISTRY).exists() or force:
        write_json_atomic(folder / REGISTRY, {})
    return federation


def generate_site_key(state: Path, name: str, force: bool = False) -> SiteKeys:
    """At the site: create its key pair in ``state`` (``site.key`` 0600, folder 0700)."""
    _check_site_name(name)
    private_path, public_path = state / SITE_KEY, state / SITE_PUB
    for path in (private_path, public_path):
        _refuse_overwrite(path, force)
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    line = _public_line(key.public_key(), name)
    private_dir(state)
    _write_private(private_path, private, force)
    _write_public(public_path, (line + "\n").encode(), force)
    return SiteKeys(name, private_path, public_path, line)


def _public_line(key: ec.EllipticCurvePublicKey, name: str) -> str:
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{raw.decode()} fedcare-site-{name}"


def load_site_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A site's OpenSSH EC public key, or a one-line error naming the file and the fix."""
    fix = f"{path}: not an OpenSSH EC public key; ask the site to run 'fedcare site keygen' and "
    try:
        text = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the public key ({exc.strerror})") from None
    if b"PRIVATE KEY" in text:
        raise ConfigError(
            f"{path}: this is a private key; it must stay at the site. Register its site.pub"
        )
    try:
        key = serialization.load_ssh_public_key(text)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(fix + "send you its site.pub") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, SITE_CURVES):
        raise ConfigError(fix + "send you its site.pub (EC P-256, P-384 or P-521)")
    return key


def _raw(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def add_site(folder: Path, name: str, public_key: Path, force: bool = False) -> Path:
    """Register a site's public key (made at the site) in the coordinator's registry; returns
    the registered copy. The coordinator never holds a site's private key."""
    _check_site_name(name)
    if not (folder / CA_CERT).exists():
        raise ConfigError(f"{folder}: no federation here; run 'fedcare pki init' first")
    key = load_site_public_key(public_key)
    registry = read_registry(folder)
    for other, entry in registry.items():
        if other == name:
            continue
        try:
            known = load_site_public_key(Path(entry["public_key"]))
        except ConfigError:
            continue
        if _raw(known) == _raw(key):
            raise ConfigError(
                f"{public_key}: this key is already registered as site {other!r}; each site "
                "needs its own key ('fedcare site keygen' at that site)"
            )
    if name in registry and not force:
        raise ConfigError(f"site {name!r} is already registered; pass --force to replace its key")
    site_dir = private_dir(folder / SITES_DIR / name)
    registered = site_dir / SITE_PUB
    _write_public(registered, (_public_line(key, name) + "\n").encode(), force)
    registry[name] = {"public_key": str(registered.resolve())}  # a new key: registered anew
    write_json_atomic(folder / REGISTRY, registry)
    return registered


def read_registry(folder: Path) -> dict[str, dict[str, str]]:
    """The coordinator's registered sites: name -> public key path (and node id once known)."""
    path = folder / REGISTRY
    if not path.exists():
        return {}
    data: dict[str, dict[str, str]] = json.loads(path.read_text())
    return data


RELEASE_KEY, RELEASE_PUB = "owner-release.key", "owner-release.pub"
RELEASE_CURVE = ec.SECP384R1  # model-signing accepts P-256, P-384 and P-521


@dataclass(frozen=True)
class ReleaseKeys:
    """Where the owner's release key pair lives: the private key signs bundles, the public key
    goes to every hospital that verifies or serves them."""

    private_key: Path
    public_key: Path


def generate_release_key(folder: Path, force: bool = False) -> ReleaseKeys:
    """Create the model owner's release signing key (EC P-384, PEM; private 0600 in a 0700
    folder). Kept apart from the federation's CA: a release signature says "the owner vouches
    for this model", not "this host belongs to the federation"."""
    keys = ReleaseKeys(folder / RELEASE_KEY, folder / RELEASE_PUB)
    for path in (keys.private_key, keys.public_key):
        _refuse_overwrite(path, force)
    key = ec.generate_private_key(RELEASE_CURVE())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_dir(folder)
    _write_private(keys.private_key, _pem_key(key), force)
    _write_public(keys.public_key, public, force)
    return keys


SERVING_CERT, SERVING_KEY = "serving.crt", "serving.key"


def issue_serving_cert(
    folder: Path, ca_key_path: Path, hosts: list[str], force: bool = False
) -> tuple[Path, Path]:
    """A TLS certificate for ``fedcare serve`` (the inference API), signed by the federation CA
    in ``folder``: hospitals that already hold ``ca.crt`` verify the API with it. The CA key is
    read once, here (bring it back from offline storage for this step). Returns (cert, key)."""
    if not hosts:
        raise ConfigError("pki serving-cert: give at least one --host the API clients connect to")
    cert_path, key_path = folder / SERVING_CERT, folder / SERVING_KEY
    for path in (cert_path, key_path):
        _refuse_overwrite(path, force)
    try:
        ca_cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    except OSError as exc:
        raise ConfigError(
            f"{exc.filename}: cannot read it ({exc.strerror}); run 'fedcare pki init' first "
            "and pass the CA key with --ca-key"
        ) from None
    except ValueError:
        raise ConfigError(f"{ca_key_path}: not an unencrypted PEM private key") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or _raw(ca_key.public_key()) != _raw(
        ca_cert.public_key()  # type: ignore[arg-type]  # an EC CA: checked by the comparison
    ):
        raise ConfigError(f"{ca_key_path}: not the private key of {folder / CA_CERT}")
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *LOOPBACK_HOSTS]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(CURVE())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write_private(key_path, _pem_key(key), force)
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM), force)
    return cert_path, key_path
