"""End to end: a ``coordinator start`` that cannot register one of its sites leaves nothing
half-started - the SuperLink, its executor and the front door it started are all stopped, the
reason is one line naming the site and what to do, and ``coordinator status`` says not running."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from fedcare.processes import Daemon, _processes, free_port
from tests.deployed_federation import fedcare

pytestmark = pytest.mark.slow


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_a_site_that_cannot_be_registered_stops_everything_the_start_began(
    tmp_path: Path,
) -> None:
    # Prepare: a federation with two sites; va's registered key is then damaged (not SSH EC)
    coord = tmp_path / "coordinator"
    assert fedcare("pki", "init", "--dir", str(coord)).returncode == 0
    for site in ("cleveland", "va"):
        state = tmp_path / site
        assert fedcare("site", "keygen", "--state", str(state), "--name", site).returncode == 0
        added = fedcare(
            "pki", "add-site", site, "--dir", str(coord), "--public-key", str(state / "site.pub")
        )
        assert added.returncode == 0, added.stderr
    (coord / "sites" / "va" / "site.pub").write_text("ecdsa-sha2-nistp384 AAAAnotakey va\n")
    port = free_port()
    # Execute
    result = fedcare("coordinator", "start", "--dir", str(coord), "--port", str(port))
    # Assert: one line, the site, Flower's reason in words, what to do; and nothing left running
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: registering site 'va' failed: Invalid format: Node ")
    assert "register it again with 'fedcare pki add-site va" in lines[0]
    assert "the coordinator was stopped (nothing left running)" in lines[0]
    config = (coord / "flwr-home" / "config.toml").read_text()
    superlink_port = int(re.search(r'address = "127.0.0.1:(\d+)"', config).group(1))  # type: ignore[union-attr]
    for name in ("superlink", "executor", "frontdoor"):
        assert not Daemon(coord / f"{name}.pid").alive(), name
    assert not _accepts(port) and not _accepts(superlink_port)
    assert [cmd for _, _, cmd in _processes() if str(coord) in cmd] == []
    status = fedcare("coordinator", "status", "--dir", str(coord))
    assert status.returncode != 0
    assert status.stderr.strip() == f"error: {coord}: coordinator is not running; start it first"
