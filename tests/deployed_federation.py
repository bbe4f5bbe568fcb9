"""A real federation on loopback, started and stopped through the fedcare CLI.

The owner's PKI, each hospital's own key pair, the coordinator (SuperLink behind its front door,
with its executor) and one SuperNode daemon per site, every process writing to log files and
stopped by pid at the end (helpers included). Shared by the end-to-end modules that need a
deployed federation, so each module (one xdist worker) builds its own and they run side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcare.processes import _processes

FEDCARE = [sys.executable, "-m", "fedcare"]

CompletedProcess = subprocess.CompletedProcess[str]


def fedcare(*args: str, timeout: float = 600, cwd: Path | None = None) -> CompletedProcess:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run(
        [*FEDCARE, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


def fedcare_all(
    *commands: tuple[str, ...], timeout: float = 600, cwd: Path | None = None
) -> list[CompletedProcess]:
    """Independent fedcare commands (each on its own site's folder) run at once: most of a
    command's time is its start-up, so the sites need not wait for each other."""
    env = os.environ | {"COLUMNS": "200"}
    pipe = subprocess.PIPE
    processes = [
        subprocess.Popen([*FEDCARE, *args], stdout=pipe, stderr=pipe, text=True, env=env, cwd=cwd)
        for args in commands
    ]
    results: list[CompletedProcess] = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout)
            results.append(CompletedProcess(process.args, process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def stock_app(folder: Path) -> Path:
    """A stock Flower app (other code than fedcare's), the same bundle wherever it is written."""
    from fedcare.flower_app import write_flower_app

    stock = "fedcare.simulations.benchmarks.stock_app"
    config = {"rounds": 1, "min-sites": 3, "out-dir": "stock-out"}  # out-dir: set per run
    return write_flower_app(folder, config, f"{stock}:server", f"{stock}:client")


def audit_entries(state: Path, run_id: str) -> list[dict[str, Any]]:
    """A site's audit-log entries for one run (none while the site has not written its log)."""
    log = state / "audit-log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return [entry for entry in map(json.loads, lines) if entry["run_id"] == run_id]


def verify_audit_logs(root: Path, sites: Sequence[str]) -> None:
    """``fedcare site audit --verify`` passes at every site."""
    checks = fedcare_all(
        *(("site", "audit", "--state", str(root / site), "--verify") for site in sites)
    )
    for site, check in zip(sites, checks, strict=True):
        assert check.returncode == 0, (site, check.stderr)


@contextlib.contextmanager
def running_federation(
    root: Path, site_data: Mapping[str, Path], approve_app: str | None = None
) -> Iterator[dict[str, Any]]:
    """A coordinator and one daemon per site in ``site_data``, all stopped (and checked gone)
    on exit. Sites run with ``--allow-non-dp``; ``approve_app``: one more bundle hash the
    coordinator may run."""
    coord, sites = root / "coordinator", list(site_data)
    started: list[Path] = []
    try:
        # The owner's PKI and each hospital's key pair are independent: made at once.
        made = fedcare_all(
            ("pki", "init", "--dir", str(coord)),
            *(("site", "keygen", "--state", str(root / site), "--name", site) for site in sites),
        )
        assert [m.returncode for m in made] == [0] * len(made), [m.stderr for m in made]
        for site in sites:  # the owner registers each site.pub (one registry: one at a time)
            public_key = str(root / site / "site.pub")
            added = fedcare(
                "pki", "add-site", site, "--dir", str(coord), "--public-key", public_key
            )
            assert added.returncode == 0, added.stderr
        approve = ("--approve-app", approve_app) if approve_app else ()
        result = fedcare("coordinator", "start", "--dir", str(coord), *approve)
        started += [coord / "superlink.pid", coord / "frontdoor.pid", coord / "executor.pid"]
        assert result.returncode == 0, result.stderr
        info = json.loads((coord / "frontdoor.pid").read_text())  # sites reach the front door
        address = f"{info['host']}:{info['port']}"
        assert info["port"] != json.loads((coord / "superlink.pid").read_text())["port"]
        for site in sites:
            started += [root / site / "supernode.pid", root / site / "executor.pid"]
        results = fedcare_all(*(
            ("site", "start", "--name", site, "--data", str(site_data[site]),
             "--state", str(root / site), "--ca", str(coord / "ca.crt"),
             "--coordinator", address, "--allow-non-dp")
            for site in sites
        ))  # fmt: skip
        for site, result in zip(sites, results, strict=True):
            assert result.returncode == 0, (site, result.stderr)
        yield {"root": root, "coord": coord, "address": address, "port": info["port"]}
    finally:
        pids = [json.loads(p.read_text())["pid"] for p in started if p.exists()]
        fedcare_all(*(("site", "stop", "--state", str(root / site)) for site in sites))
        fedcare("coordinator", "stop", "--dir", str(coord))
        alive = [pid for pid, group, _ in _processes() if pid in pids or group in pids]
        assert not alive, f"processes left running: {alive}"
