"""Two ``registry add`` at once (two owners' shells, a script run twice) never both become vN."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from fedcare.server.model_registry import ModelRegistry, sha256_file
from tests.unit.test_model_registry import make_run

ADDS = 4


def _add(root: str, run: str, barrier: Any) -> str:
    registry = ModelRegistry(Path(root))
    barrier.wait()  # every process reaches add() at the same moment
    return str(registry.add(Path(run))["version"])


def test_concurrent_adds_get_distinct_versions_with_their_own_weights(tmp_path: Path) -> None:
    runs = [make_run(tmp_path / f"run{i}", seed=i) for i in range(ADDS)]
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(ADDS) as pool:
        barrier = manager.Barrier(ADDS)
        jobs = [(str(tmp_path / "registry"), str(run), barrier) for run in runs]
        versions = pool.starmap(_add, jobs)
    assert sorted(versions) == [f"v{i}" for i in range(1, ADDS + 1)]
    registry = ModelRegistry(tmp_path / "registry")
    assert [v["version"] for v in registry.versions()] == sorted(versions)
    for run, version in zip(runs, versions, strict=True):
        assert sha256_file(registry.weights(version)) == sha256_file(
            run / "global_model.safetensors"
        )
