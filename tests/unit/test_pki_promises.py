"""fedcare.privacy.pki's promises in detail: what the certificates say, what a forced re-init
replaces, that a key is registered under one name only, and the exact one-line refusals."""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcare.errors import ConfigError
from fedcare.privacy.pki import (
    Federation,
    add_site,
    generate_site_key,
    init_federation,
    load_site_public_key,
    read_registry,
)

HOSTS = ["fed.example.org", "10.0.0.5"]


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def federation_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcare federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def openssh_line(key: ec.EllipticCurvePublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode()


@pytest.fixture
def host_clock_east_of_utc() -> Iterator[None]:
    """The host's local time zone is UTC+9 (a POSIX TZ rule: no zoneinfo needed)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "XST-9"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.fixture
def coordinator(tmp_path: Path) -> Path:
    init_federation(tmp_path / "coordinator", HOSTS)
    return tmp_path / "coordinator"


# --- the certificates -------------------------------------------------------------------------


def tls_handshake(made: Federation, server_name: str) -> None:
    """A TLS handshake in memory: a site that trusts only ``ca.crt`` connects to
    ``server_name``; the coordinator presents ``coordinator.crt``."""
    site = ssl.create_default_context(cafile=str(made.ca_cert))
    coordinator = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    coordinator.load_cert_chain(made.server_cert, made.server_key)
    to_coordinator, to_site = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = site.wrap_bio(to_site, to_coordinator, server_hostname=server_name)
    server = coordinator.wrap_bio(to_coordinator, to_site, server_side=True)
    done = {client: False, server: False}
    for _ in range(10):
        for end in (client, server):
            if not done[end]:
                try:
                    end.do_handshake()
                    done[end] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("server_name", ["fed.example.org", "10.0.0.5", "localhost", "127.0.0.1"])
def test_a_site_trusting_the_ca_accepts_the_coordinator_under_each_of_its_names(
    tmp_path: Path, server_name: str
) -> None:
    made = init_federation(tmp_path / "c", HOSTS)

    tls_handshake(made, server_name)


def test_a_site_refuses_the_coordinator_under_a_name_it_was_not_issued_for(
    tmp_path: Path,
) -> None:
    made = init_federation(tmp_path / "c", HOSTS)

    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        tls_handshake(made, "other.example.org")


def test_the_ca_is_a_self_issued_signing_only_ca_named_for_the_federation(
    tmp_path: Path,
) -> None:
    made = init_federation(tmp_path / "c", HOSTS)

    ca = certificate(made.ca_cert)

    assert ca.subject == federation_name("fedcare federation CA")
    assert ca.issuer == ca.subject
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value == x509.BasicConstraints(
        ca=True, path_length=0
    )
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value == x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def test_the_coordinator_certificate_is_a_server_only_leaf_issued_by_the_ca(
    tmp_path: Path,
) -> None:
    made = init_federation(tmp_path / "c", HOSTS)

    ca, server = certificate(made.ca_cert), certificate(made.server_cert)

    assert server.subject == federation_name("fed.example.org")
    assert server.issuer == ca.subject
    server.verify_directly_issued_by(ca)
    extensions = server.extensions
    constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    names = extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not names.critical
    usage = extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert not usage.critical and list(usage.value) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_both_certificates_are_valid_from_five_minutes_before_issue_for_825_days(
    tmp_path: Path,
) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)

    made = init_federation(tmp_path / "c", HOSTS)

    after = dt.datetime.now(dt.UTC)
    for path in (made.ca_cert, made.server_cert):
        cert = certificate(path)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        assert before - dt.timedelta(minutes=5) <= start <= after - dt.timedelta(minutes=5)
        assert end - start == dt.timedelta(days=825, minutes=5)


def test_the_certificates_are_valid_now_whatever_the_hosts_time_zone(
    tmp_path: Path, host_clock_east_of_utc: None
) -> None:
    made = init_federation(tmp_path / "c", HOSTS)

    now = dt.datetime.now(dt.UTC)
    for path in (made.ca_cert, made.server_cert):
        cert = certificate(path)
        assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
        assert now - cert.not_valid_before_utc < dt.timedelta(minutes=6)


# --- what init writes and replaces --------------------------------------------------------------


def test_a_new_federation_starts_with_an_empty_site_registry(tmp_path: Path) -> None:
    init_federation(tmp_path / "c", HOSTS)

    assert json.loads((tmp_path / "c" / "sites.json").read_text()) == {}
    assert read_registry(tmp_path / "c") == {}


def test_a_forced_init_replaces_every_key_and_certificate_and_forgets_the_sites(
    coordinator: Path, tmp_path: Path
) -> None:
    first = Federation(
        coordinator / "ca.crt",
        coordinator / "coordinator.crt",
        coordinator / "coordinator.key",
        coordinator / "offline-ca" / "ca.key",
    )
    old = {path: path.read_bytes() for path in vars(first).values()}
    add_site(coordinator, "va", generate_site_key(tmp_path / "va", "va").public_key)

    again = init_federation(coordinator, ["fed.example.org"], force=True)

    assert again == first
    assert all(path.read_bytes() != content for path, content in old.items())
    assert read_registry(coordinator) == {}


def test_init_without_a_host_is_refused_naming_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        init_federation(tmp_path / "c", [])

    assert str(error.value) == (
        "pki init: give at least one host name or IP the sites will connect to"
    )
    assert not (tmp_path / "c").exists()


# --- site keys and registration -----------------------------------------------------------------


def test_a_site_key_pair_carries_the_sites_name(tmp_path: Path) -> None:
    keys = generate_site_key(tmp_path / "state", "cleveland")

    assert keys.name == "cleveland"
    assert keys.public_line.endswith(" fedcare-site-cleveland")


@pytest.mark.parametrize("name", ["Cleveland", "", "-va", "a" * 64, "va site"])
def test_a_site_name_outside_the_rule_is_refused_naming_the_rule(
    coordinator: Path, tmp_path: Path, name: str
) -> None:
    expected = f"site name {name!r}: use lower-case letters, digits, '-' or '_' (at most 63)"

    with pytest.raises(ConfigError) as keygen:
        generate_site_key(tmp_path / "state", name)
    with pytest.raises(ConfigError) as registration:
        add_site(coordinator, name, tmp_path / "site.pub")

    assert str(keygen.value) == expected and str(registration.value) == expected


def test_a_registered_copy_is_the_key_under_the_registered_name(
    coordinator: Path, tmp_path: Path
) -> None:
    keys = generate_site_key(tmp_path / "site", "made-as-this")
    key = load_site_public_key(keys.public_key)

    registered = add_site(coordinator, "va", keys.public_key)

    assert registered.read_text() == f"{openssh_line(key)} fedcare-site-va\n"


def test_registering_without_a_federation_is_refused_naming_the_folder_and_the_fix(
    tmp_path: Path,
) -> None:
    keys = generate_site_key(tmp_path / "site", "va")

    with pytest.raises(ConfigError) as error:
        add_site(tmp_path / "empty", "va", keys.public_key)

    assert str(error.value) == (
        f"{tmp_path / 'empty'}: no federation here; run 'fedcare pki init' first"
    )


def test_another_sites_key_is_refused_naming_that_site_and_the_fix(
    coordinator: Path, tmp_path: Path
) -> None:
    keys = generate_site_key(tmp_path / "a", "a")
    add_site(coordinator, "a", keys.public_key)

    with pytest.raises(ConfigError) as error:
        add_site(coordinator, "b", keys.public_key)

    assert str(error.value) == (
        f"{keys.public_key}: this key is already registered as site 'a'; each site needs its "
        "own key ('fedcare site keygen' at that site)"
    )


def test_a_forced_re_registration_cannot_take_a_key_registered_after_it(
    coordinator: Path, tmp_path: Path
) -> None:
    first = generate_site_key(tmp_path / "a", "a")
    second = generate_site_key(tmp_path / "b", "b")
    add_site(coordinator, "a", first.public_key)
    add_site(coordinator, "b", second.public_key)

    with pytest.raises(ConfigError, match="already registered as site 'b'"):
        add_site(coordinator, "a", second.public_key, force=True)

    assert (coordinator / "sites" / "a" / "site.pub").read_text().split()[1] == (
        first.public_line.split()[1]
    )


def test_a_damaged_registration_does_not_hide_a_duplicate_key_behind_it(
    coordinator: Path, tmp_path: Path
) -> None:
    add_site(coordinator, "a", generate_site_key(tmp_path / "a", "a").public_key)
    second = generate_site_key(tmp_path / "b", "b")
    add_site(coordinator, "b", second.public_key)
    (coordinator / "sites" / "a" / "site.pub").write_text("damaged\n")

    with pytest.raises(ConfigError, match="already registered as site 'b'"):
        add_site(coordinator, "c", second.public_key)

    assert list(read_registry(coordinator)) == ["a", "b"]


# --- what is not a site public key ---------------------------------------------------------------


def test_a_private_key_is_refused_as_one_that_must_stay_at_the_site(tmp_path: Path) -> None:
    keys = generate_site_key(tmp_path / "site", "va")

    with pytest.raises(ConfigError) as error:
        load_site_public_key(keys.private_key)

    assert str(error.value) == (
        f"{keys.private_key}: this is a private key; it must stay at the site. "
        "Register its site.pub"
    )


def test_a_file_that_is_no_openssh_key_is_refused_asking_for_the_sites_site_pub(
    tmp_path: Path,
) -> None:
    path = tmp_path / "key.pub"
    path.write_text("hello\n")

    with pytest.raises(ConfigError) as error:
        load_site_public_key(path)

    assert str(error.value) == (
        f"{path}: not an OpenSSH EC public key; ask the site to run 'fedcare site keygen' and "
        "send you its site.pub"
    )


def test_a_key_that_is_not_ec_is_refused_naming_the_curves_accepted(tmp_path: Path) -> None:
    path = tmp_path / "key.pub"
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    path.write_bytes(
        key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )

    with pytest.raises(ConfigError) as error:
        load_site_public_key(path)

    assert str(error.value) == (
        f"{path}: not an OpenSSH EC public key; ask the site to run 'fedcare site keygen' and "
        "send you its site.pub (EC P-256, P-384 or P-521)"
    )
