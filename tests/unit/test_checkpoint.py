"""The coordinator's per-round checkpoint (fedcare.server.checkpoint): whole or not there.

The SIGKILL tests run the real writer in a child process that stops at a chosen instant of a
checkpoint write (just before a rename, or between the weights and the JSON) and is killed
there; the previous complete checkpoint must then be the one that loads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAvg, FedYogi

from fedcare import __version__
from fedcare.config import RunConfig
from fedcare.server.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    CheckpointError,
    check_resumable,
    load_checkpoint,
    restore_strategy_state,
    save_checkpoint,
    strategy_state,
)
from fedcare.tasks import get_task
from fedcare.weights import to_record

CONFIG = RunConfig().to_run_config()


def _checkpoint(server_round: int, seed: int = 0) -> Checkpoint:
    model = get_task(CONFIG["task"]).build_model(CONFIG["model"], seed=seed)
    weights = to_record(model)
    moments = {k: np.full_like(a.numpy(), float(server_round)) for k, a in weights.items()}
    return Checkpoint(
        round=server_round,
        rounds=5,
        run_uid="1234",
        config=dict(CONFIG),
        weights=weights,
        strategy_state={"m_t": moments, "v_t": {k: v * 2 for k, v in moments.items()}},
        history=[{"round": r, "sites": {}, "finished_at": 1.0} for r in range(server_round)],
        pending={"train_loss": {"cleveland": 0.5}},
    )


def _same_weights(a: Checkpoint, b: Checkpoint) -> bool:
    """Same arrays, in the same order (the order is part of the model for Flower's records)."""
    return list(a.weights) == list(b.weights) and all(
        np.array_equal(a.weights[k].numpy(), b.weights[k].numpy()) for k in a.weights
    )


def test_a_checkpoint_loads_as_it_was_saved(tmp_path: Path) -> None:
    saved = _checkpoint(3, seed=7)
    save_checkpoint(tmp_path, saved)
    loaded = load_checkpoint(tmp_path)
    assert (loaded.round, loaded.rounds, loaded.run_uid) == (3, 5, "1234")
    assert _same_weights(saved, loaded)
    assert loaded.config == CONFIG and loaded.history == saved.history
    assert loaded.pending == {"train_loss": {"cleveland": 0.5}}
    for name in ("m_t", "v_t"):
        for key, value in saved.strategy_state[name].items():
            assert np.array_equal(loaded.strategy_state[name][key], value)


def test_fedyogi_moments_survive_a_checkpoint(tmp_path: Path) -> None:
    strategy = FedYogi()
    strategy.m_t = {"w": np.arange(3.0)}
    strategy.v_t = {"w": np.arange(3.0) ** 2}
    checkpoint = _checkpoint(1)
    checkpoint.strategy_state = strategy_state(strategy)
    save_checkpoint(tmp_path, checkpoint)
    fresh = FedYogi()
    restore_strategy_state(fresh, load_checkpoint(tmp_path).strategy_state)
    assert np.array_equal(fresh.m_t["w"], strategy.m_t["w"])
    assert np.array_equal(fresh.v_t["w"], strategy.v_t["w"])
    assert strategy_state(FedAvg()) == {}  # a stateless strategy saves nothing
    with pytest.raises(CheckpointError, match="keeps none"):
        restore_strategy_state(FedAvg(), {"m_t": {"w": np.zeros(1)}})


def test_only_the_newest_checkpoint_and_the_one_before_are_kept(tmp_path: Path) -> None:
    for server_round in range(4):
        save_checkpoint(tmp_path, _checkpoint(server_round, seed=server_round))
    names = sorted(p.name for p in (tmp_path / CHECKPOINT_DIR).iterdir())
    assert names == [
        "round-0002.json", "round-0002.safetensors", "round-0003.json", "round-0003.safetensors",
    ]  # fmt: skip
    assert load_checkpoint(tmp_path).round == 3


@pytest.mark.parametrize("damage", ["weights-bit", "json-edit", "json-truncated", "no-weights"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(
    tmp_path: Path, damage: str
) -> None:
    save_checkpoint(tmp_path, _checkpoint(1, seed=1))
    save_checkpoint(tmp_path, _checkpoint(2, seed=2))
    folder = tmp_path / CHECKPOINT_DIR
    weights, body = folder / "round-0002.safetensors", folder / "round-0002.json"
    if damage == "weights-bit":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0x01
        weights.write_bytes(bytes(data))
    elif damage == "json-edit":
        payload = json.loads(body.read_text())
        payload["pending"] = {}
        body.write_text(json.dumps(payload))
    elif damage == "json-truncated":
        body.write_bytes(body.read_bytes()[:100])
    else:
        weights.unlink()
    loaded = load_checkpoint(tmp_path)
    assert loaded.round == 1
    assert _same_weights(loaded, _checkpoint(1, seed=1))


def test_no_checkpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no complete checkpoint") as caught:
        load_checkpoint(tmp_path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rounds": 99}, r"run config changed since the checkpoint \(rounds\)"),
        ({"seed": 5}, r"run config changed since the checkpoint \(seed\)"),
    ],
)
def test_a_resume_with_another_config_is_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    save_checkpoint(tmp_path, _checkpoint(1))
    with pytest.raises(CheckpointError, match=message):
        check_resumable(load_checkpoint(tmp_path), CONFIG | change, tmp_path)
    check_resumable(load_checkpoint(tmp_path), dict(CONFIG), tmp_path)  # same config: fine


def test_a_resume_under_another_fedcare_or_schema_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _checkpoint(1))
    older = load_checkpoint(tmp_path)
    older.fedcare_version = "0.0.1"
    with pytest.raises(CheckpointError, match=f"written by fedcare 0.0.1, this is {__version__}"):
        check_resumable(older, dict(CONFIG), tmp_path)
    other_schema = load_checkpoint(tmp_path)
    other_schema.schema_sha256 = "0" * 64
    with pytest.raises(CheckpointError, match="data schema changed"):
        check_resumable(other_schema, dict(CONFIG), tmp_path)


# -- SIGKILL while a checkpoint is being written ------------------------------------------

_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import fedcare.atomic as atomic
    from test_checkpoint import _checkpoint
    from fedcare.server.checkpoint import save_checkpoint

    run_dir, stop_at, marker = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    save_checkpoint(run_dir, _checkpoint(1, seed=1))
    real_replace = os.replace

    def stopping_replace(src, dst):
        if Path(dst).name == stop_at:  # the temp file is whole and fsynced, not yet renamed
            marker.write_text("stopped")
            time.sleep(600)
        real_replace(src, dst)

    atomic.os.replace = stopping_replace
    real_prune = __import__("fedcare.server.checkpoint", fromlist=["_prune"])._prune
    def stopping_prune(folder, keep):
        if stop_at == "prune":  # round 2 is whole; round 1 not yet pruned
            marker.write_text("stopped")
            time.sleep(600)
        real_prune(folder, keep)
    import fedcare.server.checkpoint as checkpoint
    checkpoint._prune = stopping_prune
    save_checkpoint(run_dir, _checkpoint(2, seed=2))
    """
)


@pytest.mark.parametrize(
    ("stop_at", "expected_round"),
    [
        ("round-0002.safetensors", 1),  # killed before the new weights' rename
        ("round-0002.json", 1),  # new weights in place, killed before the JSON's rename
        ("prune", 2),  # the new checkpoint is whole: it is the one that loads
    ],
)
def test_a_sigkill_during_a_checkpoint_write_leaves_a_loadable_checkpoint(
    tmp_path: Path, stop_at: str, expected_round: int
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(tests=str(Path(__file__).parent)))
    marker = tmp_path / "marker"
    run_dir = tmp_path / "run"
    child = subprocess.Popen([sys.executable, str(script), str(run_dir), stop_at, str(marker)])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the writer exited before the stopping point"
            assert time.monotonic() < deadline, "the writer never reached the stopping point"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    loaded = load_checkpoint(run_dir)
    assert loaded.round == expected_round
    assert _same_weights(loaded, _checkpoint(expected_round, seed=expected_round))
    leftovers = [p.name for p in (run_dir / CHECKPOINT_DIR).iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # the interrupted write's temp file is swept when the run resumes
