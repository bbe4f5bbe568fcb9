"""Soak test (issue #12): a real deployment on loopback - coordinator and four site daemons, real
TLS, real DP-SGD - survives the faults a hospital network has, and every ledger stays exact.

During a 10-round DP run: two site daemons are SIGKILLed (every process of theirs at once, as a
power cut would) during training and started again; then the whole coordinator (SuperLink,
front door, executor, ServerApp) is SIGKILLed mid-round, started again on the same port, and the
run resumed with ``fedcare coordinator run --resume``. The run must finish all rounds; each
site's ε in the run's privacy record must equal an independent recomputation (Opacus' own RDP
accountant) over the events its ledger holds, with no round counted twice; every checkpoint,
ledger and audit log must verify; and no temp or torn file may be left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from fedcare.privacy.ledger import PrivacyLedger
from fedcare.privacy.ledger_signing import HEAD_DELTA
from fedcare.processes import Daemon, _owned
from fedcare.server.checkpoint import CHECKPOINT_DIR, load_checkpoint
from tests.deployed_federation import FEDCARE, fedcare, running_federation, verify_audit_logs

pytestmark = pytest.mark.slow
ROUNDS = 10
ROUND_TIMEOUT_S = 60  # a killed site's round waits this long; a healthy DP round takes seconds
SITES = ("cleveland", "hungarian", "switzerland", "va")


def crash(*daemons: Daemon) -> int:
    """SIGKILL every process the daemons started, all at once, no clean-up (pid files stay):
    what a power cut or an OOM kill leaves. Returns how many processes died."""
    victims: dict[int, int] = {}
    for daemon in daemons:
        record = daemon.record()
        if record is not None:
            victims |= _owned(record, {})
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(victims)


def wait_for(path: Path, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not path.exists():
        assert time.monotonic() - started < timeout_s, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.1)
    return time.monotonic() - started


def independent_epsilon(state: Path) -> tuple[float, int]:
    """ε at the heads' δ of every event in the site's ledger - its DP-SGD rounds and the one
    release of its statistics before round 1 (a Gaussian mechanism: sample rate 1, one step) -
    by Opacus' RDP accountant directly (not fedcare's accounting module), and the number of
    events. The statistics are released once, even across the coordinator's crash and resume."""
    events = PrivacyLedger(state).read()
    accountant = RDPAccountant()
    assert [e.kind for e in events].count("gaussian") == 1, events
    for event in events:
        assert event.kind in ("dp-sgd", "gaussian"), event
        accountant.history.append((event.noise_multiplier, event.sample_rate, event.steps))
    return accountant.get_epsilon(delta=HEAD_DELTA), len(events)


def test_a_deployed_dp_run_survives_site_and_coordinator_crashes_with_exact_ledgers(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    data = {site: site_paths[site] for site in SITES}
    with running_federation(tmp_path, data) as federation:
        coord, port, address = federation["coord"], federation["port"], federation["address"]
        follower_log = (tmp_path / "follower.log").open("w")
        follower = subprocess.Popen(
            [*FEDCARE, "coordinator", "run", "--dir", str(coord), "--min-sites", "3",
             "--rounds", str(ROUNDS), "--dp", "--target-epsilon", "3",
             "--round-timeout", str(ROUND_TIMEOUT_S), "--timeout", "1800"],
            stdout=follower_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not list((coord / "runs").glob("*/submitted.json")):
                assert time.monotonic() < deadline, "the run was not submitted"
                time.sleep(0.2)
            run = next((coord / "runs").glob("*/submitted.json")).parent
            checkpoints = run / CHECKPOINT_DIR

            # Two site daemons die during training and come back.
            site_kills = []
            for after_round, site in ((1, "switzerland"), (3, "va")):
                wait_for(checkpoints / f"round-{after_round:04d}.json", 600, f"round {after_round}")
                state = tmp_path / site
                killed = crash(Daemon(state / "supernode.pid"), Daemon(state / "executor.pid"))
                assert killed >= 2, f"{site}: nothing to kill"
                restarted = fedcare(
                    "site", "start", "--name", site, "--data", str(data[site]),
                    "--state", str(state), "--ca", str(coord / "ca.crt"),
                    "--coordinator", address, "--allow-non-dp",
                )  # fmt: skip
                assert restarted.returncode == 0, (site, restarted.stderr)
                site_kills.append((site, after_round + 1, killed))

            # The whole coordinator dies mid-round (round 6 under way) and comes back.
            wait_for(checkpoints / "round-0005.json", 900, "round 5")
            time.sleep(1.0)  # round 6's requests are out
            daemons = [
                Daemon(coord / n) for n in ("superlink.pid", "frontdoor.pid", "executor.pid")
            ]
            coordinator_killed = crash(*daemons)
            assert coordinator_killed >= 3
        finally:
            os.killpg(follower.pid, signal.SIGKILL)  # the operator's terminal went with the host
            follower.wait(timeout=30)
            follower_log.close()

        crashed_at = load_checkpoint(run).round
        assert crashed_at < ROUNDS, "the run finished before the coordinator crash"
        started = time.monotonic()
        restarted = fedcare("coordinator", "start", "--dir", str(coord), "--port", str(port))
        assert restarted.returncode == 0, restarted.stderr
        resumed = fedcare(
            "coordinator", "run", "--dir", str(coord), "--resume", str(run),
            "--timeout", "1800", timeout=1900,
        )  # fmt: skip
        resume_s = time.monotonic() - started
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "run resumed" in resumed.stdout

        # The run is whole: every round once, the final model, one continuous record.
        rounds = json.loads((run / "rounds.json").read_text())
        assert [r["round"] for r in rounds] == list(range(ROUNDS + 1))
        assert (run / "global_model.safetensors").is_file()
        final = load_checkpoint(run)
        assert final.round == ROUNDS
        assert [r["from_round"] for r in final.resumes] == [crashed_at]
        missing = {(r["round"], s): why for r in rounds for s, why in r.get("missing", {}).items()}
        for site, killed_round, _ in site_kills:  # recorded, or it answered before it died
            assert missing.get((killed_round, site)) in (None, "timeout", "offline")
        for record in rounds:  # a dead site is missing, never a "reply" to reject
            assert record["rejected"] == {}, record
            for site in SITES:  # every site either went into the round or is named missing
                took_part = site in record["epsilon"]
                assert took_part or record["round"] == 0 or (record["round"], site) in missing

        # Every site's ε is exact: the run's privacy record (each site's signed ledger head)
        # equals Opacus' own accountant over the site's whole ledger, no round counted twice.
        privacy = json.loads((run / "privacy.json").read_text())
        figures = {}
        for site in SITES:
            epsilon, entries = independent_epsilon(tmp_path / site)
            assert privacy[site]["entries"] == entries, site
            assert privacy[site]["epsilon"] == pytest.approx(epsilon, rel=1e-9), site
            rounds_charged = [e.round for e in PrivacyLedger(tmp_path / site).read()]
            assert len(rounds_charged) == len(set(rounds_charged)), (site, rounds_charged)
            figures[site] = (round(epsilon, 3), entries)
        # A round the crashed coordinator had already sent, asked again by the resumed run (a
        # new Flower run): answered by both runs at the site (its audit log), charged once.
        repeats = 0
        for site in SITES:
            lines = (tmp_path / site / "audit-log.jsonl").read_text().splitlines()
            runs_per_round: dict[int, set[str]] = {}
            for entry in map(json.loads, lines):
                if entry.get("message_type") == "train":
                    runs_per_round.setdefault(entry["round"], set()).add(entry["run_id"])
            repeats += sum(len(runs) > 1 for runs in runs_per_round.values())
        verify_audit_logs(tmp_path, SITES)
        for site in SITES:  # each site's own report verifies its ledger's chain
            report = fedcare("privacy", "report", "--state", str(tmp_path / site))
            assert report.returncode == 0, (site, report.stderr)

        # Nothing torn or half-written anywhere in the federation's folders.
        leftovers = [p for p in tmp_path.rglob("*.tmp")]
        assert leftovers == [], leftovers
        print(
            f"\nsoak: {ROUNDS} rounds; site kills survived {len(site_kills)} "
            f"{[(s, r) for s, r, _ in site_kills]}; coordinator killed after round {crashed_at} "
            f"({coordinator_killed} processes) and resumed, restart + remaining rounds "
            f"{resume_s:.0f} s; train requests repeated after the resume and answered without "
            f"a second charge: {repeats}; ε, ledger events per site {figures}"
        )
