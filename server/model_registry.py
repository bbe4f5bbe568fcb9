"""The model owner's registry: every trained global model as a version with its lineage.

A folder (the coordinator keeps one beside its runs; a researcher may keep one for simulation
run folders)::

    registry.jsonl  registry.head.json      the chained log (fedcare.chained_log): every entry
    versions/vN/global_model.safetensors    the version's weights, copied in when it is added

The log is append-only and tamper-evident like a site's ledger: an edited, reordered, removed or
torn entry makes every command refuse the registry. Three kinds of entry, each naming a version:
``version`` (lineage, written by ``registry add``), ``validation`` (what the sites measured,
``registry validate``) and ``release`` (the signed bundle and the gate's verdict). A version's
weights are checked against the sha256 its entry records whenever they are used, so a weights
file swapped after the fact is refused rather than validated or released under the old name.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.atomic import write_bytes_atomic
from fedcare.chained_log import ChainBrokenError, ChainedJsonLog, canonical
from fedcare.errors import FedcareError
from fedcare.locking import file_lock
from fedcare.run_record import RunRecord
from fedcare.runtime_keys import ROUNDS_FILE

LOG_FILE = "registry.jsonl"
ADD_LOCK_FILE = "registry.add.lock"
ADD_LOCK_TIMEOUT_S = 120.0
HEAD_FILE = "registry.head.json"
VERSIONS_DIR = "versions"
WEIGHTS_FILE = "global_model.safetensors"
SUMMARY_FILE = "summary.json"  # a simulation run folder's (fedcare.simulations)
PREPROCESSING_FILE = "preprocessing.json"  # a run's federation statistics (server.app)
PRIVACY_FILE = "privacy.json"  # a deployed run's signed ledger heads (server.app)
VERSION = "version"
VALIDATION = "validation"
RELEASE = "release"
_VERSION_ID = re.compile(r"v([1-9][0-9]*)")


class RegistryError(FedcareError):
    """The registry, a run folder or a version cannot be used; the message says which and why."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _epsilon(value: Any) -> float | str:
    """ε as JSON keeps it: a number, or "inf" (a non-private release; JSON has no infinity)."""
    number = float(value)
    return number if math.isfinite(number) else "inf"


def _contributors(record: dict[str, Any]) -> list[str]:
    """Sites whose update went into this round's aggregate (a DP reply carries ε, a
    non-private one its training loss; a rejected or refused site contributed nothing)."""
    sent = set(record.get("train_loss", {})) | set(record.get("epsilon", {}))
    return sorted(sent - set(record.get("rejected", {})) - set(record.get("refused", {})))


def _privacy(run_dir: Path, rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each site's ε and δ at the end of the run.

    A simulation recomputes them from every site's ledger into ``summary.json``. A deployed
    run keeps each site's last signed ledger head (``privacy.json``): ε of its whole ledger at
    the heads' fixed δ, signed with the site key. Failing both, the ε each site reported with
    its updates, at a δ it did not report (null). A site that trained without DP has ε ∞
    (``"inf"``); a site with no entry sent no DP update.
    """
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file():
        privacy = json.loads(summary_path.read_text(encoding="utf-8")).get("privacy")
        if privacy:
            return {
                site: {"epsilon": float(v["epsilon"]), "delta": float(v["delta"])}
                for site, v in sorted(privacy["sites"].items())
            }
    heads_path = run_dir / PRIVACY_FILE
    if heads_path.is_file():
        heads = json.loads(heads_path.read_text(encoding="utf-8"))
        return {
            site: {"epsilon": _epsilon(head["epsilon"]), "delta": float(head["delta"])}
            for site, head in sorted(heads.items())
        }
    result: dict[str, dict[str, float | None]] = {}
    for record in rounds:
        for site, epsilon in record.get("epsilon", {}).items():
            delta = record.get("delta", {}).get(site)
            result[site] = {"epsilon": float(epsilon), "delta": delta}
    return dict(sorted(result.items()))


def _training_preprocessing(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / PREPROCESSING_FILE
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record


@dataclass(frozen=True)
class ModelRegistry:
    """One registry folder (see module docstring)."""

    root: Path

    @property
    def _log(self) -> ChainedJsonLog:
        return ChainedJsonLog(self.root / LOG_FILE, self.root / HEAD_FILE, what="registry entry")

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, verified; a damaged log is refused (never read as fewer versions)."""
        if not (self.root / LOG_FILE).exists() and not (self.root / HEAD_FILE).exists():
            return []
        try:
            return self._log.read()
        except ChainBrokenError as exc:
            raise RegistryError(
                f"{self.root / LOG_FILE}: registry refused: {exc}; restore it from backup"
            ) from None

    def versions(self) -> list[dict[str, Any]]:
        """Every version, oldest first, each with its validations and releases attached."""
        entries = self.entries()
        views = {e[VERSION]: dict(e) for e in entries if e["kind"] == VERSION}
        for view in views.values():
            view["validations"], view["releases"] = [], []
        for entry in entries:
            if entry["kind"] == VALIDATION:
                views[entry[VERSION]]["validations"].append(entry)
            elif entry["kind"] == RELEASE:
                views[entry[VERSION]]["releases"].append(entry)
        return list(views.values())

    def get(self, version: str) -> dict[str, Any]:
        """The version ``version`` with its validations and releases; a clear error if unknown."""
        for view in self.versions():
            if view[VERSION] == version:
                return view
        known = ", ".join(v[VERSION] for v in self.versions()) or "none yet"
        raise RegistryError(f"{self.root}: no version {version!r} (versions: {known})")

    def weights(self, version: str) -> Path:
        """The version's weights file, after checking it still has the recorded sha256."""
        entry = self.get(version)
        path = self.root / VERSIONS_DIR / version / WEIGHTS_FILE
        if not path.is_file():
            raise RegistryError(f"{path}: weights of {version} are missing; restore the registry")
        if sha256_file(path) != entry["weights_sha256"]:
            raise RegistryError(
                f"{path}: weights of {version} do not match the sha256 the registry recorded; "
                "they were changed after registration - restore them from backup"
            )
        return path

    def add(self, run_dir: Path) -> dict[str, Any]:
        """Register the finished run in ``run_dir`` as the next version; returns its entry.

        One ``add`` at a time (``registry.add.lock``): the duplicate check, the next version
        number and the append happen together, so two at once never both become vN."""
        record = RunRecord.read(run_dir)  # a folder that is not a finished run: nothing written
        weights = run_dir / WEIGHTS_FILE
        rounds_path = run_dir / ROUNDS_FILE
        if not weights.is_file() or not rounds_path.is_file():
            raise RegistryError(
                f"{run_dir}: not a finished fedcare run (needs {WEIGHTS_FILE} and {ROUNDS_FILE}); "
                "register a run folder after its last round"
            )
        with file_lock(self.root / ADD_LOCK_FILE, timeout=ADD_LOCK_TIMEOUT_S):
            return self._add(run_dir, record, weights, rounds_path)

    def _add(
        self, run_dir: Path, record: RunRecord, weights: Path, rounds_path: Path
    ) -> dict[str, Any]:
        rounds = json.loads(rounds_path.read_text(encoding="utf-8"))
        weights_sha = sha256_file(weights)
        existing = self.versions()
        for view in existing:
            if view["run"]["run_dir"] == str(run_dir.resolve()) or (
                view["weights_sha256"] == weights_sha
            ):
                raise RegistryError(
                    f"{run_dir}: already registered as {view[VERSION]}; nothing added"
                )
        parent = next(
            (v[VERSION] for v in existing if v["weights_sha256"] == record.initial_sha256), None
        )
        version = f"v{len(existing) + 1}"
        entry: dict[str, Any] = {
            "kind": VERSION,
            VERSION: version,
            "parent": parent,
            "registered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run": {
                "run_dir": str(run_dir.resolve()),
                "run_id": record.run_id,
                "config_sha256": record.config_sha256,
                "config": record.config,
            },
            "strategy": record.config["strategy"],
            "rounds": record.config["rounds"],
            "task": record.task,
            "schema_sha256": record.schema_sha256,
            "model": record.model,
            "fedcare_version": record.fedcare_version,
            "flower_version": record.flower_version,
            "sites_per_round": {
                str(r["round"]): _contributors(r) for r in rounds if int(r["round"]) > 0
            },
            "privacy": _privacy(run_dir, rounds),
            # the federation's statistics it trained with (preprocessing = "federation")
            "preprocessing": _training_preprocessing(run_dir),
            "weights_sha256": weights_sha,
        }
        target = self.root / VERSIONS_DIR / version / WEIGHTS_FILE
        write_bytes_atomic(target, weights.read_bytes())  # weights first: an entry never dangles
        if sha256_file(target) != weights_sha:
            raise RegistryError(f"{run_dir}: {WEIGHTS_FILE} changed while it was being registered")
        self._log.append(entry)
        return entry

    def add_validation(self, version: str, validation: dict[str, Any]) -> dict[str, Any]:
        """Attach what the sites measured for ``version`` (``registry validate``)."""
        self.weights(version)  # the version exists and its weights are the registered ones
        entry = {
            "kind": VALIDATION,
            VERSION: version,
            "validated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **validation,
        }
        try:
            canonical(entry)  # a NaN or infinity is refused before anything is written
        except ValueError:
            raise RegistryError(
                f"validation of {version} holds a value that is not a finite number; not recorded"
            ) from None
        self._log.append(entry)
        return entry

    def add_release(self, version: str, release: dict[str, Any]) -> dict[str, Any]:
        """Record that ``version`` was released (bundle path, digest, gate verdict)."""
        self.weights(version)
        entry = {
            "kind": RELEASE,
            VERSION: version,
            "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **release,
        }
        self._log.append(entry)
        return entry


def latest_validation(view: dict[str, Any]) -> dict[str, Any] | None:
    """The version's most recent validation, or None before ``registry validate``."""
    return view["validations"][-1] if view["validations"] else None


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every lineage field that differs between two versions, as (dotted key, a, b)."""
    ignore = {"kind", VERSION, "registered_at", "validations", "releases"}
    out: list[tuple[str, Any, Any]] = []

    def walk(prefix: str, left: Any, right: Any) -> None:
        if isinstance(left, dict) and isinstance(right, dict):
            for key in sorted(set(left) | set(right)):
                if not prefix and key in ignore:
                    continue
                walk(f"{prefix}.{key}" if prefix else key, left.get(key), right.get(key))
        elif left != right:
            out.append((prefix, left, right))

    walk("", a, b)
    return out
