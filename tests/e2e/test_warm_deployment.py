"""End to end on loopback: a deployed site serves every ClientApp message with a prestarted
worker (started before the message arrived), and ``site stop`` leaves none of its processes.

One coordinator and one hospital daemon started through the fedcare CLI
(``tests/deployed_federation.py``), one FedAvg round: a ClientApp task at the site per message
(each leaves one entry in the site's audit log).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from fedcare.client.executor import WORKER_MODULE
from fedcare.processes import _processes, process_stat
from fedcare.superexec import WORKERS_DIR
from tests.deployed_federation import audit_entries, fedcare, running_federation

pytestmark = pytest.mark.slow
SITE = "cleveland"
HANDED = re.compile(
    r"task (\d+): handed to prestarted flwr-clientapp worker (\d+) "
    r"\(forked ([\d.]+) s before from template (\d+)\)"
)
FINISHED = re.compile(r"task (\d+): prestarted worker (\d+) finished, exit code (\S+)")


def site_processes(executor_pid: int) -> dict[int, tuple[int, str]]:
    """pid -> (start time, command line) of the site executor and all its descendants."""
    table = {pid: cmdline for pid, _, cmdline in _processes()}
    stats = {pid: stat for pid in table if (stat := process_stat(pid)) is not None}
    found, grew = {executor_pid}, True
    while grew:
        children = {pid for pid, stat in stats.items() if stat.ppid in found}
        grew = not children <= found
        found |= children
    return {pid: (stats[pid].start_time, table[pid]) for pid in found if pid in stats}


def still_alive(processes: dict[int, tuple[int, str]]) -> list[str]:
    return [
        cmdline
        for pid, (start, cmdline) in processes.items()
        if (stat := process_stat(pid)) is not None and stat.start_time == start
    ]


def test_deployed_messages_go_to_prestarted_workers_and_site_stop_ends_them(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    with running_federation(tmp_path, {SITE: site_paths[SITE]}) as federation:
        state, runs = federation["root"] / SITE, federation["coord"] / "runs"
        # Execute: one round at the one site
        result = fedcare(
            "coordinator", "run", "--dir", str(federation["coord"]), "--min-sites", "1",
            "--rounds", "1", "--strategy", "fedavg", "--timeout", "300",
            "--preprocessing", "site",  # one site: no federation's statistics
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        # Assert: every message was handed to a worker that was running before it arrived
        (run_dir,) = runs.iterdir()
        messages = audit_entries(state, json.loads((run_dir / "run.json").read_text())["run_id"])
        log = (state / "logs" / "executor.log").read_text()
        handed = HANDED.findall(log)
        assert len(messages) >= 2 and len(handed) == len(messages), log[-3000:]
        # each a fresh process, forked (before its task came) from the one preloaded template,
        # which itself ran no task
        (template,) = {template for _, _, _, template in handed}
        assert len({pid for _, pid, _, _ in handed}) == len(handed)
        assert template not in {pid for _, pid, _, _ in handed}
        assert all(float(before) > 0 for _, _, before, _ in handed)
        finished = {(task, pid): code for task, pid, code in FINISHED.findall(log)}
        assert finished == {(task, pid): "0" for task, pid, _, _ in handed}
        assert "cold start" not in log

        # Execute: stop the site while its next worker waits for a task
        deadline = time.monotonic() + 180
        while not list((state / WORKERS_DIR).glob("*.ready")):
            assert time.monotonic() < deadline, "the next worker never became ready"
            time.sleep(0.2)
        executor_pid = int((state / "executor.pid").read_text().split('"pid": ')[1].split(",")[0])
        before_stop = site_processes(executor_pid)
        workers = [cmdline for _, cmdline in before_stop.values() if WORKER_MODULE in cmdline]
        assert workers, before_stop
        stopped = fedcare("site", "stop", "--state", str(state))
        # Assert: nothing of the site runs any more, and its worker's socket is gone
        assert stopped.returncode == 0, stopped.stderr
        assert still_alive(before_stop) == []
        assert list((state / WORKERS_DIR).iterdir()) == []
