"""The coordinator's per-round checkpoint, and what a resumed run checks before it continues.

Why: Flower has no resume of its own, and a run over hospital networks lasts hours or days. After
every round's aggregation the ServerApp writes ``checkpoint/round-NNNN.safetensors`` (the global
weights and the server optimiser's moments, FedAdam/FedYogi's ``m_t``/``v_t``) and then
``checkpoint/round-NNNN.json`` (round, run config and its hash, task schema, fedcare and Flower
versions, the history of rounds so far, the train-side record of the round whose evaluation is
still to come, and the weights file's sha256), each by temp file + fsync + rename
(:mod:`fedcare.atomic`). The JSON is written last and carries its own sha256: a checkpoint is
complete only when its JSON verifies and names the weights' hash. The previous complete
checkpoint is deleted only after the new one is whole, so a crash at any instant - a SIGKILL
half-way through a write included - leaves at least one loadable checkpoint.

A resumed run is a new Flower run that starts at the round after the last complete checkpoint,
with the same run config; it refuses in one line when the config, the task's schema or the
fedcare version differ from the checkpoint's, because the rounds before and after would then
not be one run. Sites key their ledger events by the first run's id (``run-uid``), so a round
repeated after a resume is recognised at the site (:mod:`fedcare.client.rounds`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import Strategy
from safetensors.numpy import load as load_numpy
from safetensors.numpy import save as save_numpy

from fedcare import __version__
from fedcare.atomic import write_bytes_atomic, write_json_atomic
from fedcare.chained_log import canonical
from fedcare.errors import FedcareError
from fedcare.run_record import config_sha256, schema_sha256

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
FORMAT = 1
MODEL_PREFIX = "model."
# The server optimiser's state in Flower's FedOpt family (FedAdagrad, FedAdam, FedYogi): the
# first and second moments, one array per model tensor. Every other strategy fedcare offers
# keeps no state between rounds.
STRATEGY_MOMENTS = ("m_t", "v_t")
_NAME = re.compile(r"^round-(\d{4,})\.json$")


class CheckpointError(FedcareError):
    """No usable checkpoint, or one that does not belong to the run being resumed."""


@dataclass
class Checkpoint:
    """One complete round: what a resumed run needs to continue as the same run."""

    round: int
    rounds: int
    run_uid: str
    config: dict[str, Any]
    weights: ArrayRecord
    strategy_state: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    pending: dict[str, Any] = field(default_factory=dict)  # train side of the round to evaluate
    resumes: list[dict[str, Any]] = field(default_factory=list)
    fedcare_version: str = __version__
    flower_version: str = field(default_factory=lambda: importlib.metadata.version("flwr"))
    schema_sha256: str = ""

    @property
    def config_sha256(self) -> str:
        return config_sha256(self.config)


def strategy_state(strategy: Strategy) -> dict[str, dict[str, np.ndarray]]:
    """The optimiser moments ``strategy`` holds (empty for a stateless strategy)."""
    state: dict[str, dict[str, np.ndarray]] = {}
    for name in STRATEGY_MOMENTS:
        moments = getattr(strategy, name, None)
        if isinstance(moments, dict) and moments:
            state[name] = {k: np.asarray(v) for k, v in moments.items()}
    return state


def restore_strategy_state(strategy: Strategy, state: dict[str, dict[str, np.ndarray]]) -> None:
    """Put saved moments back into a freshly built strategy of the same kind."""
    for name, moments in state.items():
        if not hasattr(strategy, name):
            raise CheckpointError(
                f"the checkpoint holds {name} but strategy {type(strategy).__name__} keeps none; "
                "resume with the run's own strategy"
            )
        setattr(strategy, name, {k: v.copy() for k, v in moments.items()})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensors(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    tensors = {
        MODEL_PREFIX + k: np.ascontiguousarray(a.numpy()) for k, a in checkpoint.weights.items()
    }
    for name, moments in checkpoint.strategy_state.items():
        tensors |= {f"{name}.{k}": np.ascontiguousarray(v) for k, v in moments.items()}
    return tensors


def _stem(server_round: int) -> str:
    return f"round-{server_round:04d}"


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` (weights first, its JSON last), then drop all but it and the one
    before it; returns the JSON's path."""
    folder = run_dir / CHECKPOINT_DIR
    sweep_temp_files(folder)
    stem = _stem(checkpoint.round)
    blob = save_numpy(_tensors(checkpoint))
    write_bytes_atomic(folder / f"{stem}.safetensors", blob)
    body = {
        "format": FORMAT,
        "round": checkpoint.round,
        "rounds": checkpoint.rounds,
        "run_uid": checkpoint.run_uid,
        "config": checkpoint.config,
        "config_sha256": checkpoint.config_sha256,
        "schema_sha256": checkpoint.schema_sha256 or schema_sha256(str(checkpoint.config["task"])),
        "fedcare_version": checkpoint.fedcare_version,
        "flower_version": checkpoint.flower_version,
        "weights_file": f"{stem}.safetensors",
        "weights_sha256": _sha256(blob),
        # safetensors stores tensors sorted by name; the model's own order is part of the model
        # (an update whose arrays come in another order is rejected as another model)
        "weights_order": list(checkpoint.weights.keys()),
        "strategy_state": sorted(checkpoint.strategy_state),
        "history": checkpoint.history,
        "pending": checkpoint.pending,
        "resumes": checkpoint.resumes,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = folder / f"{stem}.json"
    write_json_atomic(path, body | {"sha256": _sha256(canonical(body).encode("utf-8"))})
    _prune(folder, keep={checkpoint.round, _previous_round(folder, checkpoint.round)})
    return path


def sweep_temp_files(folder: Path) -> list[Path]:
    """Remove the temp files of writes a crash interrupted (:mod:`fedcare.atomic` names them
    ``.<name>.<random>.tmp``); never a complete file. Returns what it removed."""
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _rounds_on_disk(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    found = (_NAME.match(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def _previous_round(folder: Path, current: int) -> int | None:
    """The newest complete checkpoint before ``current`` (kept until ``current`` is whole)."""
    for server_round in reversed(_rounds_on_disk(folder)):
        if server_round < current and _verify(folder, server_round) is None:
            return server_round
    return None


def _prune(folder: Path, keep: set[int | None]) -> None:
    for path in folder.iterdir():
        match = re.match(r"^round-(\d{4,})\.(json|safetensors)$", path.name)
        if match and int(match.group(1)) not in keep:
            path.unlink(missing_ok=True)


def _verify(folder: Path, server_round: int) -> str | None:
    """Why the checkpoint of ``server_round`` is not complete (None: it is)."""
    return _read_verified(folder, server_round)[2]


def _read_verified(folder: Path, server_round: int) -> tuple[dict[str, Any], bytes, str | None]:
    """The checkpoint's JSON body and weights file as read once, and why it is not complete
    (None: it is; the body and bytes are then the verified ones)."""
    path = folder / f"{_stem(server_round)}.json"
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {}, b"", f"{path.name}: unreadable ({type(exc).__name__})"
    claimed = body.pop("sha256", None)
    if claimed != _sha256(canonical(body).encode("utf-8")):
        return body, b"", f"{path.name}: its sha256 does not match its content"
    weights = folder / str(body.get("weights_file", ""))
    try:
        data = weights.read_bytes()
    except OSError:
        return body, b"", f"{weights.name}: missing"
    if _sha256(data) != body.get("weights_sha256"):
        return body, data, f"{weights.name}: its sha256 is not the one {path.name} recorded"
    return body, data, None


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """The newest complete checkpoint of ``run_dir``; an incomplete newer one is skipped with a
    warning (a crash while it was being written)."""
    folder = run_dir / CHECKPOINT_DIR
    for stale in sweep_temp_files(folder):  # the resumed run owns the folder from here
        log.warning("removed %s, left by a write the crash interrupted", stale.name)
    for server_round in reversed(_rounds_on_disk(folder)):
        body, data, problem = _read_verified(folder, server_round)
        if problem is not None:
            log.warning("checkpoint of round %d skipped: %s", server_round, problem)
            continue
        tensors = load_numpy(data)  # the very bytes whose sha256 was checked
        weights = ArrayRecord(
            {k: Array(np.asarray(tensors[MODEL_PREFIX + k])) for k in body["weights_order"]}
        )
        state = {
            name: {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
            for name in body["strategy_state"]
        }
        return Checkpoint(
            round=int(body["round"]),
            rounds=int(body["rounds"]),
            run_uid=str(body["run_uid"]),
            config=body["config"],
            weights=weights,
            strategy_state=state,
            history=list(body["history"]),
            pending=dict(body["pending"]),
            resumes=list(body["resumes"]),
            fedcare_version=str(body["fedcare_version"]),
            flower_version=str(body["flower_version"]),
            schema_sha256=str(body["schema_sha256"]),
        )
    raise CheckpointError(
        f"{folder}: no complete checkpoint to resume from; start the run again without --resume"
    )


def check_resumable(checkpoint: Checkpoint, config: dict[str, Any], folder: Path) -> None:
    """Refuse, in one line, a resume that would not continue the same run."""
    if checkpoint.config_sha256 != config_sha256(config):
        changed = sorted(
            k
            for k in set(config) | set(checkpoint.config)
            if config.get(k) != checkpoint.config.get(k)
        )
        raise CheckpointError(
            f"{folder}: the run config changed since the checkpoint ({', '.join(changed)}); "
            "resume with the run's own config, or start a new run"
        )
    schema = schema_sha256(str(config["task"]))
    if checkpoint.schema_sha256 != schema:
        raise CheckpointError(
            f"{folder}: task {config['task']}'s data schema changed since the checkpoint; "
            "the rounds before and after would read the sites' data differently - start a new run"
        )
    if checkpoint.fedcare_version != __version__:
        raise CheckpointError(
            f"{folder}: checkpoint written by fedcare {checkpoint.fedcare_version}, this is "
            f"{__version__}; resume with fedcare {checkpoint.fedcare_version}, or start a new run"
        )
    flower = importlib.metadata.version("flwr")
    if checkpoint.flower_version != flower:
        log.warning(
            "checkpoint written under Flower %s, resuming under %s",
            checkpoint.flower_version,
            flower,
        )
