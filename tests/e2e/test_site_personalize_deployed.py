"""End to end on loopback: ``fedcare site personalize`` at a site of a running deployment sends
nothing (issue #13 item 2).

A real deployment (``tests/deployed_federation.py``: the coordinator's SuperLink behind its
front door, TLS, one SuperNode daemon per hospital, each with its own key, ledger and audit
log) and a real signed release (``tests/release_bundle.py``). While Cleveland's daemon is
connected, the hospital personalizes the release on its own rows (DP, the default: on the same
ledger and under the same training lock as the daemon's rounds). What left the site is read
from the site's own audit log (every message it sends is recorded there before it leaves) and
from every file under the coordinator's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from fedcare.client.audit import audit_log
from fedcare.weights import read_weights
from tests.deployed_federation import fedcare, running_federation, verify_audit_logs
from tests.release_bundle import make_bundle, release_key

pytestmark = pytest.mark.slow
SITES = ("cleveland", "hungarian")
SITE = "cleveland"
MIN_SEARCHED_BYTES = 32  # a tensor's bytes searched for (logreg's bias alone is 4 bytes)


def files_holding(folder: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``folder`` that contains any of ``needles``."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            if any(needle in content for needle in needles):
                found.append(str(path))
    return found


def test_personalizing_at_a_connected_site_sends_nothing(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    started = time.monotonic()
    keys = release_key(tmp_path / "owner")
    bundle = make_bundle(tmp_path / "release", keys, site_paths[SITE], "logreg")
    with running_federation(tmp_path / "fed", {s: site_paths[s] for s in SITES}) as federation:
        # Prepare: the site's daemon is up and connected; what its audit log holds now
        state, coord = federation["root"] / SITE, federation["coord"]
        daemon = json.loads((state / "supernode.pid").read_text())["pid"]
        before = audit_log(state).read()
        deployed = time.monotonic()

        # Execute: personalize at the site, with its daemon running
        done = fedcare(
            "site", "personalize", "--bundle", str(bundle), "--key", str(keys.public_key),
            "--data", str(site_paths[SITE]), "--state", str(state), "--name", SITE,
            timeout=300,
        )  # fmt: skip
        personalized = time.monotonic()

        # Assert: it ran next to the live daemon, and the site's audit log gained exactly the
        # local personalization entry - no message, reply or error was sent
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1].startswith("nothing was sent")
        os.kill(daemon, 0)  # still running
        after = audit_log(state).read()
        assert after[: len(before)] == before
        new = after[len(before) :]
        assert [e["kind"] for e in new] == ["personalization"], new
        assert new[0]["sent"] == "nothing" and new[0]["message_type"] is None
        # ... and the personalized weights (the file, its sha256, each tensor's bytes) are
        # nowhere under the coordinator's folder, though the same search finds them at the site
        weights = state / "personalized" / "heart-risk-v7.safetensors"
        payload = weights.read_bytes()
        digest = hashlib.sha256(payload).hexdigest()
        assert new[0]["saved"]["sha256"] == digest and digest in done.stdout
        tensors = [t.numpy().tobytes() for t in read_weights(weights).values()]
        needles = [payload, digest.encode(), *(t for t in tensors if len(t) >= MIN_SEARCHED_BYTES)]
        assert len(needles) >= 3
        assert files_holding(coord, needles) == []
        assert str(weights) in files_holding(state, needles)
        assert str(state / "audit-log.jsonl") in files_holding(state, [digest.encode()])
        verify_audit_logs(federation["root"], SITES)
    print(
        f"\nsite personalize e2e: deployment up in {deployed - started:.1f} s, personalize "
        f"{personalized - deployed:.1f} s, total {time.monotonic() - started:.1f} s"
    )
