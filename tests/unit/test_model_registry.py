"""The model registry: lineage from a run folder, append-only and tamper-evident."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.config import RunConfig
from fedcare.errors import ExitCode
from fedcare.run_record import RunRecord
from fedcare.server.model_registry import (
    LOG_FILE,
    VERSIONS_DIR,
    WEIGHTS_FILE,
    ModelRegistry,
    RegistryError,
    diff,
    latest_validation,
    sha256_file,
)
from fedcare.tasks import ModelName, get_task
from fedcare.weights import save_weights

ROUNDS = [
    {"round": 0, "sites": {}, "train_loss": {}, "epsilon": {}, "refused": {}, "rejected": {}},
    {
        "round": 1,
        "sites": {},
        "train_loss": {},
        "epsilon": {"cleveland": 0.4, "hungary": 0.5, "va": 0.6},
        "refused": {"switzerland": "privacy-budget-exhausted"},
        "rejected": {"va": "update norm 9.1 > 2.0"},
    },
    {
        "round": 2,
        "sites": {},
        "train_loss": {},
        "epsilon": {"cleveland": 0.8, "hungary": 0.9, "va": 1.1},
        "refused": {},
        "rejected": {},
    },
]


def make_run(folder: Path, seed: int = 0, initial: Path | None = None, **config: object) -> Path:
    """A finished run folder as the ServerApp writes it (record, rounds, weights)."""
    run = RunConfig(dp=True, target_epsilon=1.0, seed=seed, **config)  # type: ignore[arg-type]
    folder.mkdir(parents=True)
    initial_sha = sha256_file(initial) if initial else None
    RunRecord.create("1234", run.to_run_config(), initial_sha).write(folder)
    (folder / "rounds.json").write_text(json.dumps(ROUNDS))
    model = get_task(run.task).build_model(ModelName.LOGREG, seed=seed + 1)
    save_weights(folder / WEIGHTS_FILE, model.state_dict())
    return folder


def test_a_run_becomes_a_version_with_its_lineage(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    entry = registry.add(make_run(tmp_path / "run1"))
    assert entry["version"] == "v1" and entry["parent"] is None
    assert entry["task"] == "heart-disease" and entry["model"] == "logreg"
    assert entry["strategy"] == "fedyogi" and entry["rounds"] == 20
    assert len(entry["run"]["config_sha256"]) == 64 and entry["run"]["run_id"] == "1234"
    assert entry["flower_version"].startswith("1.") and entry["fedcare_version"]
    # refused and rejected sites did not contribute to the round's aggregate
    assert entry["sites_per_round"] == {
        "1": ["cleveland", "hungary"],
        "2": ["cleveland", "hungary", "va"],
    }
    assert entry["privacy"]["va"] == {"epsilon": 1.1, "delta": None}
    assert entry["weights_sha256"] == sha256_file(tmp_path / "run1" / WEIGHTS_FILE)
    assert registry.weights("v1").read_bytes() == (tmp_path / "run1" / WEIGHTS_FILE).read_bytes()
    assert [v["version"] for v in registry.versions()] == ["v1"]


def test_a_simulation_records_epsilon_and_delta_from_its_summary(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run1")
    summary = {"privacy": {"sites": {"cleveland": {"epsilon": 0.97, "delta": 1e-5}}}}
    (run / "summary.json").write_text(json.dumps(summary))
    entry = ModelRegistry(tmp_path / "registry").add(run)
    assert entry["privacy"] == {"cleveland": {"epsilon": 0.97, "delta": 1e-5}}


def test_a_run_started_from_a_version_names_it_as_parent(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(make_run(tmp_path / "run1"))
    child = registry.add(make_run(tmp_path / "run2", seed=5, initial=registry.weights("v1")))
    assert child["version"] == "v2" and child["parent"] == "v1"
    changes = dict((key, (a, b)) for key, a, b in diff(registry.get("v1"), registry.get("v2")))
    assert changes["parent"] == (None, "v1")
    assert changes["run.config.seed"] == (0, 5)
    assert "weights_sha256" in changes and "task" not in changes


def test_the_same_run_is_registered_once(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    run = make_run(tmp_path / "run1")
    registry.add(run)
    with pytest.raises(RegistryError, match="already registered as v1"):
        registry.add(run)
    assert len(registry.versions()) == 1


def test_an_unfinished_run_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run1")
    (run / WEIGHTS_FILE).unlink()
    registry = ModelRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="not a finished fedcare run"):
        registry.add(run)
    assert not (tmp_path / "registry").exists()


@pytest.mark.parametrize("damage", ["edit", "drop-last", "reorder"])
def test_a_changed_registry_log_is_refused(tmp_path: Path, damage: str) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(make_run(tmp_path / "run1"))
    registry.add(make_run(tmp_path / "run2", seed=3))
    log = tmp_path / "registry" / LOG_FILE
    lines = log.read_text().splitlines()
    if damage == "edit":
        lines[0] = lines[0].replace('"fedyogi"', '"fedavg"')
    elif damage == "drop-last":
        lines = lines[:-1]
    else:
        lines.reverse()
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(RegistryError, match="registry refused"):
        registry.versions()


def test_swapped_weights_are_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(make_run(tmp_path / "run1"))
    stored = tmp_path / "registry" / VERSIONS_DIR / "v1" / WEIGHTS_FILE
    save_weights(stored, {"weight": torch.zeros(1, 13), "bias": torch.zeros(1)})
    with pytest.raises(RegistryError, match="do not match the sha256"):
        registry.weights("v1")
    with pytest.raises(RegistryError, match="do not match"):
        registry.add_validation("v1", {"sites": {}})


def test_validations_and_releases_attach_to_their_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(make_run(tmp_path / "run1"))
    registry.add_validation("v1", {"sites": {"cleveland": {"all": {"auroc": 0.8}}}})
    registry.add_release("v1", {"bundle": "/b", "verdict": "passed"})
    view = registry.get("v1")
    assert view["validations"][0]["sites"]["cleveland"]["all"]["auroc"] == 0.8
    assert view["releases"][0]["bundle"] == "/b"
    with pytest.raises(RegistryError, match="no version 'v9'"):
        registry.get("v9")


def test_a_validation_with_a_non_finite_value_is_refused_whole(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(make_run(tmp_path / "run1"))
    with pytest.raises(RegistryError, match="not a finite number"):
        registry.add_validation("v1", {"sites": {"va": {"all": {"auroc": float("nan")}}}})
    assert registry.get("v1")["validations"] == []


def test_cli_add_list_show_and_a_one_line_refusal(tmp_path: Path) -> None:
    runner = CliRunner()
    reg = str(tmp_path / "registry")
    result = runner.invoke(
        app, ["registry", "add", str(make_run(tmp_path / "run1")), "--registry", reg]
    )
    assert result.exit_code == 0, result.output
    assert "registered v1" in result.output
    listed = runner.invoke(app, ["registry", "list", "--registry", reg])
    assert listed.exit_code == 0 and "v1" in listed.output and "1.10" in listed.output
    shown = runner.invoke(app, ["registry", "show", "v1", "--registry", reg])
    assert shown.exit_code == 0 and "config sha256" in shown.output
    missing = runner.invoke(app, ["registry", "add", str(tmp_path), "--registry", reg])
    assert missing.exit_code == int(ExitCode.FAILURE)
    assert "run.record.json is missing" in missing.output


def test_diff_lists_lineage_fields_only_and_keys_on_either_side() -> None:
    # Prepare: two versions differing in registration, validations and releases (not lineage),
    # in a nested value, in a site present in one only, and in a record absent from one.
    old = {
        "kind": "version", "version": "v1", "registered_at": "2026-01-01T00:00:00Z",
        "validations": [], "releases": [], "task": "heart-disease",
        "run": {"config": {"seed": 0}}, "privacy": {"cleveland": {"epsilon": 1.0}},
        "preprocessing": None,
    }  # fmt: skip
    new = old | {
        "version": "v2", "registered_at": "2026-02-01T00:00:00Z",
        "validations": [{"sites": {}}], "releases": [{"bundle": "/b"}],
        "run": {"config": {"seed": 5}},
        "privacy": {"cleveland": {"epsilon": 1.0}, "va": {"epsilon": 2.0}},
        "preprocessing": {"mean": [0.5]},
    }  # fmt: skip

    # Execute / Assert
    assert diff(old, new) == [
        ("preprocessing", None, {"mean": [0.5]}),
        ("privacy.va", None, {"epsilon": 2.0}),
        ("run.config.seed", 0, 5),
    ]
    assert diff(old, old) == []


def test_latest_validation_is_the_last_one_recorded(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(make_run(tmp_path / "run1"))
    assert latest_validation(registry.get("v1")) is None
    for auroc in (0.7, 0.8):
        registry.add_validation("v1", {"sites": {"va": {"all": {"auroc": auroc}}}})
    assert latest_validation(registry.get("v1"))["sites"]["va"]["all"]["auroc"] == 0.8


def test_entries_are_stamped_in_utc_whatever_the_local_time_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a local time zone far from UTC.
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        registry = ModelRegistry(tmp_path / "registry")
        before = datetime.now(UTC)

        # Execute
        stamps = [
            registry.add(make_run(tmp_path / "run1"))["registered_at"],
            registry.add_validation("v1", {"sites": {}})["validated_at"],
            registry.add_release("v1", {"bundle": "/b"})["released_at"],
        ]
    finally:
        monkeypatch.undo()
        time.tzset()

    # Assert: ISO 8601 UTC, within the test's own run time.
    for stamp in stamps:
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert before - timedelta(seconds=1) <= when <= datetime.now(UTC), stamp


def test_missing_or_swapped_weights_are_refused_with_the_fix(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(make_run(tmp_path / "run1"))
    stored = tmp_path / "registry" / VERSIONS_DIR / "v1" / WEIGHTS_FILE
    save_weights(stored, {"weight": torch.zeros(1, 13), "bias": torch.zeros(1)})
    with pytest.raises(RegistryError) as swapped:
        registry.weights("v1")
    stored.unlink()
    with pytest.raises(RegistryError) as missing:
        registry.weights("v1")
    assert str(swapped.value) == (
        f"{stored}: weights of v1 do not match the sha256 the registry recorded; they were "
        "changed after registration - restore them from backup"
    )
    assert str(missing.value) == f"{stored}: weights of v1 are missing; restore the registry"


def test_an_unknown_version_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError) as empty:
        registry.get("v1")
    registry.add(make_run(tmp_path / "run1"))
    registry.add(make_run(tmp_path / "run2", seed=3))
    with pytest.raises(RegistryError) as unknown:
        registry.get("v9")
    assert str(empty.value) == f"{registry.root}: no version 'v1' (versions: none yet)"
    assert str(unknown.value) == f"{registry.root}: no version 'v9' (versions: v1, v2)"


def test_validating_a_site_standardised_model_warns_that_it_is_scored_as_served() -> None:
    from fedcare.cli.registry import served_preprocessing_warning
    from fedcare.config import Preprocessing, RunConfig

    warning = served_preprocessing_warning("v3", RunConfig(preprocessing=Preprocessing.SITE))
    assert warning is not None
    assert warning.startswith("warning: v3 was trained with each site's own standardisation")
    assert "--preprocessing federation" in warning and "\n" not in warning
    federation = RunConfig(preprocessing=Preprocessing.FEDERATION)
    assert served_preprocessing_warning("v3", federation) is None
