"""Finding 9 of the trust-hardening issue: ``stop`` ends exactly what ``start`` started.

Before, ``coordinator stop`` and ``site stop`` SIGKILLed any process whose command line contained
``:PORT`` of the component, other software on a shared host included, and signalled a recorded
pid's group even when that pid had since been reused by another process. Now the pid file
records pid, group and kernel start time, and only those processes and their descendants are
signalled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

FEDCARE = [sys.executable, "-m", "fedcare"]


def fedcare(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run(
        [*FEDCARE, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def stat_of(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, start time) of a living process, read from /proc independently of fedcare."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else (int(fields[1]), int(fields[2]), int(fields[19]))


def started_by(pid_files: list[Path]) -> dict[int, int]:
    """pid -> start time of every recorded process, its group and all their descendants."""
    table = {int(p.name): s for p in Path("/proc").iterdir() if p.name.isdigit()
             if (s := stat_of(int(p.name)))}  # fmt: skip
    roots = {int(json.loads(f.read_text())["pid"]) for f in pid_files}
    found = {pid for pid, (_, group, _) in table.items() if pid in roots or group in roots}
    grew = True
    while grew:
        children = {pid for pid, (parent, _, _) in table.items() if parent in found}
        grew = not children <= found
        found |= children
    return {pid: table[pid][2] for pid in found}


def still_running(processes: dict[int, int]) -> list[int]:
    return [pid for pid, start in processes.items() if (s := stat_of(pid)) and s[2] == start]


@pytest.fixture
def bystanders() -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    """Unrelated processes (other software on the host) that name a fedcare port, by port."""
    started: dict[int, subprocess.Popen[bytes]] = {}
    yield started
    for process in started.values():
        process.kill()
        process.wait()


def bystander(port: int) -> subprocess.Popen[bytes]:
    code = "import time; time.sleep(600)"
    return subprocess.Popen([sys.executable, "-c", code, f"127.0.0.1:{port}"])


def ports(folder: Path) -> set[int]:
    return {int(json.loads(f.read_text())["port"]) for f in folder.glob("*.pid")}


def start_coordinator(root: Path, site: str | None = None) -> tuple[Path, str]:
    """A coordinator (with ``site`` registered from ``root/site/site.pub``), and its address."""
    coord = root / "coordinator"
    assert fedcare("pki", "init", "--dir", str(coord)).returncode == 0
    if site is not None:
        public_key = str(root / site / "site.pub")
        added = fedcare("pki", "add-site", site, "--dir", str(coord), "--public-key", public_key)
        assert added.returncode == 0, added.stderr
    started = fedcare("coordinator", "start", "--dir", str(coord))
    assert started.returncode == 0, started.stderr
    return coord, started.stdout.split("listening on ")[1].split()[0]


@pytest.mark.slow
def test_coordinator_stop_spares_a_bystander_naming_its_port(
    tmp_path: Path, bystanders: dict[int, subprocess.Popen[bytes]]
) -> None:
    coord, _ = start_coordinator(tmp_path)
    try:
        for port in ports(coord):
            bystanders[port] = bystander(port)
        ours = started_by(list(coord.glob("*.pid")))
        assert ours

        stopped = fedcare("coordinator", "stop", "--dir", str(coord))

        assert stopped.returncode == 0, stopped.stderr
        assert [p.poll() for p in bystanders.values()] == [None] * len(bystanders)
        assert still_running(ours) == []
    finally:
        fedcare("coordinator", "stop", "--dir", str(coord))


@pytest.mark.slow
def test_site_stop_spares_a_bystander_and_ends_everything_the_site_started(
    tmp_path: Path, bystanders: dict[int, subprocess.Popen[bytes]], site_paths: dict[str, Path]
) -> None:
    state = tmp_path / "va"
    assert fedcare("site", "keygen", "--state", str(state), "--name", "va").returncode == 0
    coord, address = start_coordinator(tmp_path, "va")
    try:
        site = fedcare(
            "site", "start", "--name", "va", "--data", str(site_paths["va"]),
            "--state", str(state), "--ca", str(coord / "ca.crt"), "--coordinator", address,
            "--allow-non-dp",
        )  # fmt: skip
        assert site.returncode == 0, site.stderr
        for port in ports(state) | ports(coord) | {int(address.rsplit(":", 1)[1])}:
            bystanders[port] = bystander(port)
        site_processes = started_by(list(state.glob("*.pid")))
        assert site_processes

        assert fedcare("site", "stop", "--state", str(state)).returncode == 0

        assert [p.poll() for p in bystanders.values()] == [None] * len(bystanders)
        assert still_running(site_processes) == []
        everything = started_by(list(coord.glob("*.pid")))
        assert fedcare("coordinator", "stop", "--dir", str(coord)).returncode == 0
        assert [p.poll() for p in bystanders.values()] == [None] * len(bystanders)
        assert still_running(everything) == []
    finally:
        fedcare("site", "stop", "--state", str(state))
        fedcare("coordinator", "stop", "--dir", str(coord))


def test_a_stale_pid_file_whose_pid_was_reused_signals_nobody(tmp_path: Path) -> None:
    """The site daemon died long ago and its pid now belongs to another program (here: a
    process group leader, as a reused daemon pid would be). ``site stop`` clears the pid file
    and leaves that program alone."""
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        recorded = stat_of(other.pid)
        assert recorded is not None
        state = tmp_path / "site"
        state.mkdir()
        for name in ("supernode.pid", "executor.pid"):
            (state / name).write_text(json.dumps({
                "pid": other.pid, "pgid": other.pid, "start_time": recorded[2] - 1,
                "host": "127.0.0.1", "port": 1, "argv": ["flower-supernode"],
            }))  # fmt: skip

        result = fedcare("site", "stop", "--state", str(state))

        assert result.returncode == 0, result.stderr
        assert other.poll() is None, f"the unrelated process got signal {-(other.poll() or 0)}"
        assert not (state / "supernode.pid").exists()
    finally:
        other.kill()
        other.wait()
