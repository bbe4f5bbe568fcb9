"""What a run was: ``run.record.json``, written by the ServerApp before its first round.

The registry builds a version's lineage from it: the exact run config and its hash, the task
and a fingerprint of its data schema, the model, the fedcare and Flower versions that ran it,
and the sha256 of the weights it started from (how a version finds its parent). Written by the
ServerApp itself, so a deployed run and a simulated one record the same thing the same way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedcare import __version__
from fedcare.atomic import write_json_atomic
from fedcare.chained_log import canonical
from fedcare.errors import FedcareError
from fedcare.tasks import get_task

RUN_RECORD_FILE = "run.record.json"


def config_sha256(config: dict[str, Any]) -> str:
    """sha256 of the run config's canonical JSON: equal hashes mean equal settings."""
    return hashlib.sha256(canonical(config).encode("utf-8")).hexdigest()


def schema_sha256(task_name: str) -> str:
    """A fingerprint of the task's data schema (its columns, ranges, levels and label).

    Two versions with the same fingerprint read site files the same way; a changed schema
    changes it, so ``registry diff`` shows it.
    """
    task = get_task(task_name)
    schema = getattr(sys.modules[type(task).__module__], "SCHEMA", None)
    return hashlib.sha256(repr(schema).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RunRecord:
    """See module docstring."""

    run_id: str
    config: dict[str, Any]
    config_sha256: str
    task: str
    model: str
    schema_sha256: str
    fedcare_version: str
    flower_version: str
    initial_sha256: str | None  # None: a fresh model from the run's seed

    @classmethod
    def create(cls, run_id: str, config: dict[str, Any], initial_sha256: str | None) -> RunRecord:
        return cls(
            run_id=run_id,
            config=config,
            config_sha256=config_sha256(config),
            task=str(config["task"]),
            model=str(config["model"]),
            schema_sha256=schema_sha256(str(config["task"])),
            fedcare_version=__version__,
            flower_version=importlib.metadata.version("flwr"),
            initial_sha256=initial_sha256,
        )

    def write(self, run_dir: Path) -> None:
        write_json_atomic(run_dir / RUN_RECORD_FILE, asdict(self))

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        path = run_dir / RUN_RECORD_FILE
        if not path.is_file():
            raise FedcareError(
                f"{path} is missing: {run_dir} is not a fedcare run folder (or predates run "
                "records); register the folder a fedcare run wrote"
            )
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise FedcareError(f"{path}: unreadable run record ({exc}); rerun the run") from None
