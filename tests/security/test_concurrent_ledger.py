"""Issue #20, finding 6: concurrent writers must neither corrupt a chained log nor overspend.

The attacks need no privilege, only two things happening at once at one site: two processes
appending to its ledger or audit log (a SuperNode's ClientApp and a `fedcare` command, or two
runs), and two DP rounds of two runs arriving together. Each writer here is its own Python
process, started together through a start file, writing to the same state folder through the
real entry points (the ledger, the audit log, the real ClientApp).

Randomness: only the processes' interleaving. The assertions on the new code hold for every
interleaving (the lock serialises the writers), so they cannot fail by chance.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from flwr.app import ConfigRecord

from fedcare import messages as keys
from fedcare.client.audit import audit_log
from fedcare.client.request import RoundRequest
from fedcare.client.rounds import RoundRefused, train_round
from fedcare.client.site import SiteIdentity
from fedcare.config import RunConfig
from fedcare.privacy.accounting import epsilon_from_events
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.server.app import request_config
from fedcare.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
WRITERS, APPENDS = 4, 10

APPEND_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fedcare.client.audit import audit_log
    from fedcare.privacy.events import PrivacyEvent
    from fedcare.privacy.ledger import PrivacyLedger
    which, state, start, writer, count = sys.argv[1:6]
    state, start = Path(state), Path(start)
    print("ready", flush=True)
    while not start.exists():
        time.sleep(0.001)
    for i in range(int(count)):
        if which == "ledger":
            PrivacyLedger(state).append(PrivacyEvent(
                f"writer-{writer}", i, 1.1, 0.1, 10, 1e-5, 1.0, "2026-01-01T00:00:00Z"))
        else:
            audit_log(state).append({"writer": writer, "i": i})
    """
)

ROUND_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from fedcare.client.app import app
    from fedcare.config import RunConfig
    from tests.flower_harness import site_context, train_message
    data, state, start = (Path(arg) for arg in sys.argv[1:4])
    budget = float(sys.argv[4])
    config = RunConfig(dp=True, target_epsilon=1.0, rounds=1)
    message = train_message(config, 1)
    context = site_context("va", data, state, **{"max-epsilon": budget})
    context.run_id = os.getpid()  # two runs, not one run's request sent twice
    print("ready", flush=True)
    while not start.exists():
        time.sleep(0.001)
    reply = app(message, context)
    print(json.dumps({"error": reply.error.reason} if reply.has_error()
                     else {"epsilon": reply.content["metrics"]["epsilon"]}))
    """
)


HOLD_SCRIPT = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(300)
    """
)


def start_together(script: str, args: list[list[str]], start: Path) -> list[str]:
    """Run one process per argument list; all start work when ``start`` appears; their output
    after the "ready" line each prints once it waits for the start."""
    command = [sys.executable, "-c", script]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    processes = [subprocess.Popen([*command, *a], cwd=ROOT, text=True, **pipes) for a in args]
    for process in processes:  # every process has imported everything and waits for the start
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    start.touch()
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        outputs.append(stdout)
    return outputs


@pytest.mark.parametrize("which", ["ledger", "audit"])
def test_concurrent_appends_from_several_processes_keep_every_entry(
    which: str, tmp_path: Path
) -> None:
    # Prepare / Execute: WRITERS processes append APPENDS entries each, all at once.
    state = tmp_path / "state"
    args = [[which, str(state), str(tmp_path / "go"), str(w), str(APPENDS)] for w in range(WRITERS)]
    start_together(APPEND_SCRIPT, args, tmp_path / "go")
    # Assert: the log verifies and holds every entry exactly once, each writer's in its order.
    if which == "ledger":
        entries = [(e.run_id.removeprefix("writer-"), e.round) for e in PrivacyLedger(state).read()]
    else:
        entries = [(e["writer"], e["i"]) for e in audit_log(state).read()]
    assert len(entries) == WRITERS * APPENDS
    for writer in range(WRITERS):
        assert [i for w, i in entries if w == str(writer)] == list(range(APPENDS))


def test_two_concurrent_dp_rounds_at_one_site_never_overspend_its_budget(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: a budget that fits one round of this run and not two.
    budget = 1.2
    state = tmp_path / "state"
    args = [[str(site_paths["va"]), str(state), str(tmp_path / "go"), str(budget)]] * 2
    # Execute: two runs send the site a DP round at the same moment.
    replies = [json.loads(out.strip().splitlines()[-1]) for out in start_together(
        ROUND_SCRIPT, args, tmp_path / "go")]  # fmt: skip
    # Assert: one trained, the other was refused for the budget; the ledger stays within it.
    events = PrivacyLedger(state).read()
    assert len(events) == 1, f"{len(events)} rounds trained: {replies}"
    accountant, delta = RunConfig().accountant, events[0].delta
    spent = epsilon_from_events(events, delta, accountant)
    assert spent <= budget < epsilon_from_events([*events, *events], delta, accountant)
    assert sorted(replies, key=str) == sorted(
        [{"epsilon": spent}, {"error": keys.REFUSED_BUDGET}], key=str
    )


def test_a_round_that_cannot_get_the_site_is_declined_as_busy(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: another process holds the site's training lock.
    from fedcare.client.rounds import TRAINING_LOCK_FILE  # new: absent before the fix

    site = SiteIdentity.from_mapping(
        {"site-name": "va", "data-path": str(site_paths["va"]), "state-dir": str(tmp_path)}
    )
    config = RunConfig(dp=True, target_epsilon=1.0, rounds=1)
    request = RoundRequest.from_record(ConfigRecord(request_config(config) | {"server-round": 1}))
    model = get_task(config.task).build_model(config.model, seed=0).state_dict()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(tmp_path / TRAINING_LOCK_FILE)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # Execute / Assert: the round waits its timeout, then declines; nothing was spent.
        with pytest.raises(RoundRefused) as refused:
            train_round(request, site, model, "run-1", lock_timeout=0.5)
        assert refused.value.reason == keys.REFUSED_BUSY
        assert PrivacyLedger(tmp_path).read() == ()
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone the same round trains.
    assert keys.EPSILON in train_round(request, site, model, "run-1", lock_timeout=5).metrics
