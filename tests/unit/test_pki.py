"""fedcare.privacy.pki: site keys made at the site, public keys registered, CA key apart."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fedcare.errors import ConfigError
from fedcare.privacy.pki import (
    add_site,
    generate_site_key,
    init_federation,
    load_site_public_key,
    read_registry,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def coordinator(tmp_path: Path) -> Path:
    init_federation(tmp_path / "coordinator", ["fed.example.org"])
    return tmp_path / "coordinator"


def test_a_site_key_is_an_openssh_ec_pair_private_to_the_site(tmp_path: Path) -> None:
    keys = generate_site_key(tmp_path / "state", "cleveland")

    private = serialization.load_ssh_private_key(keys.private_key.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert keys.public_key.read_text().strip() == keys.public_line
    assert keys.public_line.endswith(" fedcare-site-cleveland")
    assert mode(keys.private_key) == 0o600 and mode(keys.private_key.parent) == 0o700
    with pytest.raises(ConfigError, match="--force"):
        generate_site_key(tmp_path / "state", "cleveland")
    assert generate_site_key(tmp_path / "state", "cleveland", force=True).public_line != (
        keys.public_line
    )


def test_the_owner_registers_a_copy_of_the_public_key_only(
    coordinator: Path, tmp_path: Path
) -> None:
    keys = generate_site_key(tmp_path / "site", "va")

    registered = add_site(coordinator, "va", keys.public_key)

    assert registered == coordinator / "sites" / "va" / "site.pub"
    assert registered.read_text().split()[:2] == keys.public_line.split()[:2]
    assert read_registry(coordinator) == {"va": {"public_key": str(registered.resolve())}}
    assert not list(coordinator.rglob("site.key"))


def test_a_p256_key_made_elsewhere_is_accepted(coordinator: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    path = tmp_path / "p256.pub"
    path.write_bytes(
        key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )

    add_site(coordinator, "p256", path)

    assert "p256" in read_registry(coordinator)


@pytest.mark.parametrize("kind", ["private", "ed25519", "text", "missing"])
def test_what_is_not_a_site_public_key_is_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "key.pub"
    if kind == "private":
        generate_site_key(tmp_path / "site", "x")
        path = tmp_path / "site" / "site.key"
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate().public_key()
        path.write_bytes(
            key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        )
    elif kind == "text":
        path.write_text("hello\n")

    with pytest.raises(ConfigError) as error:
        load_site_public_key(path)

    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_name_is_registered_once_unless_forced_and_a_key_under_one_name_only(
    coordinator: Path, tmp_path: Path
) -> None:
    first = generate_site_key(tmp_path / "a", "a")
    second = generate_site_key(tmp_path / "b", "b")
    add_site(coordinator, "a", first.public_key)

    with pytest.raises(ConfigError, match="already registered as site 'a'"):
        add_site(coordinator, "b", first.public_key)
    with pytest.raises(ConfigError, match="--force"):
        add_site(coordinator, "a", second.public_key)
    add_site(coordinator, "a", second.public_key, force=True)

    assert (coordinator / "sites" / "a" / "site.pub").read_text().split()[1] == (
        second.public_line.split()[1]
    )


def test_the_ca_key_is_written_apart_and_loopback_is_always_a_name(tmp_path: Path) -> None:
    offline = tmp_path / "usb"

    made = init_federation(tmp_path / "c", ["10.0.0.5", "localhost"], ca_key_dir=offline)

    assert made.ca_key == offline / "ca.key" and mode(made.ca_key) == 0o600
    assert mode(offline) == 0o700 and mode(tmp_path / "c") == 0o700
    assert not (tmp_path / "c" / "ca.key").exists()
    certificate = x509.load_pem_x509_certificate(made.server_cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]  # once
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [
        "10.0.0.5", "127.0.0.1"
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="--force"):
        init_federation(tmp_path / "c", ["localhost"], ca_key_dir=offline)
