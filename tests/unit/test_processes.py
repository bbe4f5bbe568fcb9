"""fedcare.processes: a daemon's pid file identifies exactly the processes it started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from fedcare.processes import Daemon, process_stat

# A stand-in for Flower's SuperLink: one helper in its own group, one in a new session (as
# flower-superexec is started), a file written under the daemon's umask, then it waits.
PARENT = """
import subprocess, sys, time
from pathlib import Path
sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
same = subprocess.Popen(sleep)
other = subprocess.Popen(sleep, start_new_session=True)
Path(sys.argv[1]).write_text(f"{same.pid} {other.pid}")
time.sleep(600)
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def wait_for(path: Path) -> str:
    deadline = time.monotonic() + 30
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return path.read_text()


def bystander(port: int) -> subprocess.Popen[bytes]:
    code = "import time; time.sleep(600)"
    return subprocess.Popen([sys.executable, "-c", code, f"127.0.0.1:{port}"])


def test_stop_ends_the_daemon_and_its_helpers_in_other_sessions_and_nothing_else(
    tmp_path: Path,
) -> None:
    daemon = Daemon(tmp_path / "state" / "x.pid")
    helpers_file = tmp_path / "state" / "helpers"
    log = tmp_path / "state" / "logs" / "x.log"
    other = bystander(4242)
    helpers: list[int] = []
    try:
        pid = daemon.start([sys.executable, "-c", PARENT, str(helpers_file)], log, {}, 4242)
        helpers += [int(p) for p in wait_for(helpers_file).split()]
        record = json.loads(daemon.pid_file.read_text())
        leader = process_stat(pid)
        assert leader is not None and daemon.alive()
        assert (record["pid"], record["pgid"], record["start_time"]) == (
            pid, pid, leader.start_time
        )  # fmt: skip
        assert mode(log.parent) == 0o700 and mode(log) == 0o600
        assert mode(helpers_file) == 0o600  # written by the daemon under umask 077

        signalled = daemon.stop(timeout=5)

        assert signalled == 3
        assert [process_stat(p) for p in (pid, *helpers)] == [None, None, None]
        assert other.poll() is None  # names the daemon's port, is not the daemon's
        assert not daemon.pid_file.exists() and not daemon.alive()
    finally:
        daemon.stop(timeout=5)  # a no-op once stopped; ends the daemon if an assert failed
        for helper in helpers:  # in case stop itself is what failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(helper, signal.SIGKILL)
        other.kill()
        other.wait()


def test_a_pid_file_whose_pid_was_reused_is_cleared_without_signalling(tmp_path: Path) -> None:
    reused = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        now = process_stat(reused.pid)
        assert now is not None
        daemon = Daemon(tmp_path / "x.pid")
        daemon.pid_file.write_text(
            json.dumps({"pid": reused.pid, "pgid": reused.pid, "start_time": now.start_time - 1,
                        "host": "127.0.0.1", "port": 1, "argv": []})
        )  # fmt: skip

        assert not daemon.alive()
        assert daemon.stop(timeout=1) == 0

        assert reused.poll() is None
        assert not daemon.pid_file.exists()
    finally:
        reused.kill()
        reused.wait()


def test_a_pid_file_without_a_start_time_signals_nobody(tmp_path: Path) -> None:
    """A pid file from before start times were recorded cannot tell its process from a reused
    pid: it is cleared, and a still-running old daemon must be ended by hand."""
    running = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        daemon = Daemon(tmp_path / "x.pid")
        daemon.pid_file.write_text(json.dumps({"pid": running.pid, "port": 1}))

        assert not daemon.alive()
        daemon.stop(timeout=1)

        assert running.poll() is None and not daemon.pid_file.exists()
    finally:
        running.kill()
        running.wait()
