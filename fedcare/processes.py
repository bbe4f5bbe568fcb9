"""Long-running Flower processes started by fedcare, and stopping exactly those.

Each is started in its own session (process group) with output to a log file, never a pipe:
Flower's SuperLink and SuperNode start ``flower-superexec`` helpers (in sessions of their own)
that outlive a SIGTERM of their parent for a while and would keep an inherited pipe open.
Daemons run with umask 077, so every file they create (the SuperLink database, logs, ledgers)
is private to this user.

The pid file records the pid, the process group and the kernel's start time of the process
(field 22 of ``/proc/PID/stat``). ``stop`` signals only processes that provably descend from
that start: the recorded group while its leader still has the recorded start time (or is gone
and the group lives on, whose id the kernel does not reuse meanwhile), and the leader's
descendants that moved to other sessions. Nothing is matched by name, port or command line, so
other software on a shared host is never touched, and a stale pid file whose pid now belongs to
another process is cleared without signalling anyone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fedcare.atomic import write_json_atomic

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "PYTHONUNBUFFERED": "1",
}
DAEMON_UMASK = 0o077
PRIVATE_DIR_MODE, PRIVATE_FILE_MODE = 0o700, 0o600


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def flower_environment(flwr_home: Path | None = None) -> dict[str, str]:
    """This process' environment plus offline Flower settings; venv tools first on PATH."""
    env = os.environ | FLOWER_ENV
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700, also when it already existed."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


@dataclass(frozen=True)
class ProcessStat:
    """What ``/proc/PID/stat`` says about one process."""

    pid: int
    state: str
    ppid: int
    pgid: int
    start_time: int  # clock ticks after boot: with the pid, identifies one process for good


def process_stat(pid: int) -> ProcessStat | None:
    """The process' stat line, or None if there is no such process (zombies included)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    stat = ProcessStat(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[19]))
    return None if stat.state in ("Z", "X") else stat


def _table() -> dict[int, ProcessStat]:
    found: dict[int, ProcessStat] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = process_stat(int(entry.name))
            if stat is not None:
                found[stat.pid] = stat
    return found


@dataclass(frozen=True)
class PidRecord:
    """A started daemon as its pid file records it."""

    pid: int
    pgid: int
    start_time: int | None  # None: a pid file from before start times were recorded


@dataclass(frozen=True)
class Daemon:
    """A started background process: its pid file records pid, group, start time and port."""

    pid_file: Path

    def start(
        self,
        argv: list[str],
        log_file: Path,
        env: dict[str, str],
        port: int,
        host: str = "127.0.0.1",
    ) -> int:
        private_dir(log_file.parent)
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
        os.fchmod(fd, PRIVATE_FILE_MODE)  # also a log file left by an older version
        with os.fdopen(fd, "ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, umask=DAEMON_UMASK,
            )  # fmt: skip
        stat = process_stat(process.pid)  # not yet reaped, so still readable if it exited
        record = {
            "pid": process.pid,
            "pgid": process.pid,  # start_new_session: the new group's id is the leader's pid
            "start_time": stat.start_time if stat else None,
            "host": host,
            "port": port,
            "argv": argv,
        }
        write_json_atomic(self.pid_file, record)
        return process.pid

    def info(self) -> dict[str, object] | None:
        if not self.pid_file.exists():
            return None
        data: dict[str, object] = json.loads(self.pid_file.read_text())
        return data

    def record(self) -> PidRecord | None:
        info = self.info()
        if info is None:
            return None
        try:
            pid = int(str(info["pid"]))
            pgid = int(str(info.get("pgid", pid)))
            start = info.get("start_time")
            return PidRecord(pid, pgid, None if start is None else int(str(start)))
        except (KeyError, ValueError):
            return None

    def alive(self) -> bool:
        """The recorded process itself still runs (same pid and start time)."""
        record = self.record()
        return record is not None and _is_same(record.pid, record.start_time)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM what this daemon started, SIGKILL what remains after ``timeout``; clear the
        pid file. Returns how many processes were signalled (0 for a stale pid file)."""
        record = self.record()
        if record is None:
            self.pid_file.unlink(missing_ok=True)
            return 0
        signalled: dict[int, int] = {}
        owned: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while True:
            owned = _owned(record, owned)  # the living ones; helpers spawned meanwhile too
            for pid, start in owned.items():
                if pid not in signalled:
                    _signal(pid, start, signal.SIGTERM)
            signalled |= owned
            if not owned or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for pid, start in owned.items():
            _signal(pid, start, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return len(signalled)


def _is_same(pid: int, start_time: int | None) -> bool:
    stat = process_stat(pid)
    return stat is not None and start_time is not None and stat.start_time == start_time


def _owned(record: PidRecord, known: dict[int, int]) -> dict[int, int]:
    """pid -> start time of every living process this daemon started: its group (while the
    group is provably ours) and the descendants of the leader and of processes found before."""
    table = _table()
    owned = {pid: start for pid, start in known.items() if _is_same(pid, start)}
    leader = table.get(record.pgid)
    if leader is None:
        group_is_ours = True  # the kernel reuses no group id while the group has members
    else:  # a living leader must be the very process started (not a pid reused since)
        group_is_ours = record.pgid == record.pid and leader.start_time == record.start_time
    if group_is_ours:
        owned |= {s.pid: s.start_time for s in table.values() if s.pgid == record.pgid}
    roots = list(owned)
    if _is_same(record.pid, record.start_time):
        roots.append(record.pid)
    children: dict[int, list[ProcessStat]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat)
    while roots:
        parent = roots.pop()
        for child in children.get(parent, []):
            if child.pid not in owned and child.pid != os.getpid():
                owned[child.pid] = child.start_time
                roots.append(child.pid)
    owned.pop(os.getpid(), None)
    return owned


def _signal(pid: int, start_time: int, sig: signal.Signals) -> None:
    if _is_same(pid, start_time):  # never a process that took a freed pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _processes() -> list[tuple[int, int, str]]:
    """(pid, process group, command line) of every living process, for tests and diagnostics."""
    found = []
    for stat in _table().values():
        try:
            raw = Path(f"/proc/{stat.pid}/cmdline").read_bytes()
        except OSError:
            continue
        found.append((stat.pid, stat.pgid, raw.replace(b"\0", b" ").decode(errors="replace")))
    return found
