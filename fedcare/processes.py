"""Long-running Flower processes started by fedcare, and stopping every one of them.

Each is started in its own session (process group) with output to a log file, never a pipe:
Flower's SuperLink and SuperNode start ``flower-superexec`` helpers that outlive a SIGTERM of
their parent for a while and would keep an inherited pipe open. Stopping signals the whole
group, then also any stray process whose command line names the component's unique port.
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


@dataclass(frozen=True)
class Daemon:
    """A started background process: its pid file records pid, group and port."""

    pid_file: Path

    def start(
        self,
        argv: list[str],
        log_file: Path,
        env: dict[str, str],
        port: int,
        host: str = "127.0.0.1",
    ) -> int:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )  # fmt: skip
        write_json_atomic(
            self.pid_file, {"pid": process.pid, "host": host, "port": port, "argv": argv}
        )
        return process.pid

    def info(self) -> dict[str, object] | None:
        if not self.pid_file.exists():
            return None
        data: dict[str, object] = json.loads(self.pid_file.read_text())
        return data

    def alive(self) -> bool:
        info = self.info()
        if info is None:
            return False
        try:
            pid = int(str(info["pid"]))
            os.kill(pid, 0)
        except (ProcessLookupError, ValueError):
            return False
        status = Path(f"/proc/{pid}/stat")
        return not (status.exists() and status.read_text().split()[2] == "Z")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL what remains, strays included."""
        info = self.info()
        if info is None:
            return
        pid, port = int(str(info["pid"])), int(str(info["port"]))
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (_group_members(pid) or _strays(port)):
            time.sleep(0.2)
        _signal_group(pid, signal.SIGKILL)
        for stray in _strays(port):
            _kill(stray, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _processes() -> list[tuple[int, int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        found.append((int(entry.name), int(fields[2]), cmdline))
    return found


def _group_members(pgid: int) -> list[int]:
    return [pid for pid, group, _ in _processes() if group == pgid]


def _strays(port: int) -> list[int]:
    token = f":{port}"
    return [pid for pid, _, cmd in _processes() if token in cmd and pid != os.getpid()]
