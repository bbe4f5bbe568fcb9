"""Finding 8 of the trust-hardening issue: keys where they belong, files private.

Before: ``pki add-site`` generated every site's private key at the coordinator and left it there
(``sites/NAME/site.key``), ``pki init`` kept the CA private key beside the running server, and
``superlink.db``, logs and state folders were readable by group and others (0644/0755). Now a
site makes its own key pair (``site keygen``) and the owner registers only the public key, the
CA key is written apart to be moved offline (the coordinator runs without it), and every private
file is 0600 in 0700 folders, the SuperLink database included.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

FEDCARE = [sys.executable, "-m", "fedcare"]


def fedcare(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run(
        [*FEDCARE, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def private_keys_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]


def owner_and_site(tmp_path: Path, site: str = "cleveland") -> tuple[Path, Path]:
    """``pki init`` at the owner and ``site keygen`` at the site, each must succeed."""
    coord, state = tmp_path / "coordinator", tmp_path / site
    init = fedcare("pki", "init", "--dir", str(coord))
    assert init.returncode == 0, init.stderr
    keygen = fedcare("site", "keygen", "--state", str(state), "--name", site)
    assert keygen.returncode == 0, keygen.stderr
    return coord, state


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return owner_and_site(tmp_path_factory.mktemp("keys"))


def test_a_site_makes_its_own_key_and_the_owner_registers_only_its_public_key(
    federation: tuple[Path, Path],
) -> None:
    coord, state = federation

    added = fedcare(
        "pki", "add-site", "cleveland", "--dir", str(coord),
        "--public-key", str(state / "site.pub"),
    )  # fmt: skip

    assert added.returncode == 0, added.stderr
    registered = (coord / "sites" / "cleveland" / "site.pub").read_text().split()[:2]
    assert registered == (state / "site.pub").read_text().split()[:2]
    expected = {coord / "coordinator.key", coord / "offline-ca" / "ca.key"}  # CA key: to move
    assert set(private_keys_under(coord)) == expected  # no site's private key at the owner
    assert mode(state / "site.key") == 0o600 and mode(state) == 0o700
    again = fedcare("site", "keygen", "--state", str(state), "--name", "cleveland")
    assert again.returncode != 0 and "--force" in again.stderr  # never overwritten silently


def test_add_site_without_a_public_key_is_refused_in_one_line(
    federation: tuple[Path, Path],
) -> None:
    coord, _ = federation

    result = fedcare("pki", "add-site", "hungarian", "--dir", str(coord))

    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "site keygen" in result.stderr
    assert not (coord / "sites" / "hungarian").exists()


def test_a_garbage_public_key_is_refused_naming_the_file(
    federation: tuple[Path, Path], tmp_path: Path
) -> None:
    coord, _ = federation
    for content in ("not a key\n", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQ== rsa\n"):
        garbage = tmp_path / "garbage.pub"
        garbage.write_text(content)

        result = fedcare("pki", "add-site", "x", "--dir", str(coord), "--public-key", str(garbage))

        assert result.returncode != 0
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "garbage.pub" in result.stderr and "site keygen" in result.stderr
        assert not (coord / "sites" / "x").exists()


def test_one_key_cannot_be_registered_under_two_names(
    federation: tuple[Path, Path], tmp_path: Path
) -> None:
    coord, _ = federation
    keygen = fedcare("site", "keygen", "--state", str(tmp_path / "site"), "--name", "va")
    assert keygen.returncode == 0, keygen.stderr
    public_key = str(tmp_path / "site" / "site.pub")
    first = fedcare("pki", "add-site", "va", "--dir", str(coord), "--public-key", public_key)
    assert first.returncode == 0, first.stderr

    second = fedcare("pki", "add-site", "va2", "--dir", str(coord), "--public-key", public_key)

    assert second.returncode != 0 and "already registered as site 'va'" in second.stderr


def test_the_ca_private_key_is_written_apart_to_be_moved_offline(tmp_path: Path) -> None:
    coord = tmp_path / "coordinator"

    result = fedcare("pki", "init", "--dir", str(coord), "--host", "fed.example.org")

    assert result.returncode == 0, result.stderr
    assert not (coord / "ca.key").exists()
    assert mode(coord / "offline-ca" / "ca.key") == 0o600 and mode(coord / "offline-ca") == 0o700
    assert "offline" in result.stderr
    assert mode(coord) == 0o700 and mode(coord / "coordinator.key") == 0o600
    certificate = x509.load_pem_x509_certificate((coord / "coordinator.crt").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"fed.example.org", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}


@pytest.mark.slow
def test_a_federation_runs_with_no_ca_key_anywhere_and_keeps_its_files_private(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    """A real SuperLink and SuperNode: with the CA key deleted, both start; every private key,
    the SuperLink database, the logs and the state folders are this user's only."""
    coord, state = owner_and_site(tmp_path)
    ca_key = (coord / "offline-ca" / "ca.key").read_bytes()
    shutil.rmtree(coord / "offline-ca")
    assert not [p for p in tmp_path.rglob("ca.key")]
    public_key = str(state / "site.pub")
    added = fedcare("pki", "add-site", "cleveland", "--dir", str(coord), "--public-key", public_key)
    assert added.returncode == 0, added.stderr
    try:
        started = fedcare("coordinator", "start", "--dir", str(coord))
        assert started.returncode == 0, started.stderr
        assert "ca.key" not in started.stderr
        address = started.stdout.split("listening on ")[1].split()[0]
        site = fedcare(
            "site", "start", "--name", "cleveland", "--data", str(site_paths["cleveland"]),
            "--state", str(state), "--ca", str(coord / "ca.crt"), "--coordinator", address,
            "--allow-non-dp",
        )  # fmt: skip
        assert site.returncode == 0, site.stderr

        for folder in (coord, coord / "logs", state, state / "logs"):
            assert mode(folder) == 0o700, folder
        for key in (coord / "coordinator.key", state / "site.key"):
            assert mode(key) == 0o600, key
        assert mode(coord / "superlink.db") == 0o600
        made_by_daemons = [*coord.glob("superlink.db*"), *coord.glob("logs/*"), *state.glob("**/*")]
        for path in (p for p in made_by_daemons if p.is_file() and p.suffix != ".pub"):
            assert mode(path) & 0o077 == 0, f"{path}: mode {mode(path):o}"
    finally:
        fedcare("site", "stop", "--state", str(state))
        fedcare("coordinator", "stop", "--dir", str(coord))

    # A CA key left beside the coordinator is worth a warning, not a refusal.
    (coord / "ca.key").write_bytes(ca_key)
    try:
        again = fedcare("coordinator", "start", "--dir", str(coord))
        assert again.returncode == 0, again.stderr
        warnings = [line for line in again.stderr.splitlines() if "ca.key" in line]
        assert len(warnings) == 1 and "offline" in warnings[0]
    finally:
        fedcare("coordinator", "stop", "--dir", str(coord))
