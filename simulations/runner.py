"""Run the real fedcare ServerApp and ClientApp in Flower's simulation engine (Ray backend).

The apps are the very objects a deployment runs (``fedcare.server.app.app``,
``fedcare.client.app.app``); only the environment changes. The run config reaches them the way
``flwr-simulation`` delivers it to a Flower App: defaults from the app folder's
``pyproject.toml`` (written into the run folder, so it also records what was run) for the
ClientApps, and the server context's run config for the ServerApp.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.simulation.run_simulation import _run_simulation
from flwr.supercore.telemetry import EventType

from fedcare.client.app import app as client_app
from fedcare.client.policy import SitePolicy
from fedcare.client.site import HOLDOUT_TEST, SiteIdentity
from fedcare.config import RunConfig
from fedcare.errors import ConfigError, FedcareError
from fedcare.flower_app import write_flower_app
from fedcare.runtime_keys import (
    MIN_SITES_KEY,
    OUT_DIR_KEY,
    RESUME_KEY,
    ROUNDS_FILE,
    SIM_SITES_KEY,
)
from fedcare.server import progress
from fedcare.server.app import app as server_app
from fedcare.server.checkpoint import CHECKPOINT_DIR
from fedcare.server.model_validation import VALIDATION_FILE
from fedcare.server.tracking import RoundRecord
from fedcare.simulations.adversaries import Attack, adversarial_client_app
from fedcare.simulations.scenarios import Scenario
from fedcare.tasks import SiteData, get_task

log = logging.getLogger(__name__)

FLOWER_APP_DIR = "flower-app"


SITES_DIR = "sites"


def site_state_dir(out_dir: Path, site: str) -> Path:
    """Where a simulated site keeps its state (privacy ledger) inside the run folder."""
    return out_dir.resolve() / SITES_DIR / site


def simulation_run_config(
    config: RunConfig,
    scenario: Scenario,
    out_dir: Path,
    policies: dict[str, SitePolicy],
    holdout: str = HOLDOUT_TEST,
) -> dict[str, Any]:
    """The flat Flower run config of one simulated run, with each site's node settings.

    ``holdout="validation"``: every site is scored on a validation part of its training rows
    instead of its test rows (:func:`fedcare.client.site.validation_holdout`)."""
    sites = [
        SiteIdentity(
            s.name, s.path, site_state_dir(out_dir, s.name), policies[s.name], holdout=holdout
        ).to_node_config()
        for s in scenario.sites
    ]
    return config.to_run_config() | {
        OUT_DIR_KEY: str(out_dir.resolve()),
        MIN_SITES_KEY: len(sites),
        SIM_SITES_KEY: json.dumps(sites),
    }


def load_sites(config: RunConfig, scenario: Scenario) -> list[SiteData]:
    """Every site's split, loaded (and validated) before any process starts."""
    if scenario.task != config.task:
        raise ConfigError(
            f"scenario {scenario.name!r} is for task {scenario.task!r}, not {config.task!r}"
        )
    task = get_task(config.task)
    return [task.load_site(site.name, site.path) for site in scenario.sites]


def run_validation(
    config: RunConfig,
    scenario: Scenario,
    out_dir: Path,
    state_root: Path,
    policies: dict[str, SitePolicy],
    runtime: dict[str, Any],
) -> dict[str, Any]:
    """Cross-site validation of a candidate in Flower's simulation engine: the same ServerApp
    (``mode = "validate"``) and ClientApp as a deployment; returns ``validation.json``.

    Each simulated site keeps its state (privacy ledger) under ``state_root`` - the run folder
    that trained the candidate - so the statistics it releases are spent on the same ledger.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sites = [
        SiteIdentity(
            s.name, s.path, site_state_dir(state_root, s.name), policies[s.name]
        ).to_node_config()
        for s in scenario.sites
    ]
    run_config = config.to_run_config() | runtime | {
        OUT_DIR_KEY: str(out_dir.resolve()),
        MIN_SITES_KEY: len(sites),
        SIM_SITES_KEY: json.dumps(sites),
    }  # fmt: skip
    _simulate(run_config, out_dir, len(sites), client_app)
    path = out_dir / VALIDATION_FILE
    if not path.is_file():
        raise FedcareError(f"the validation simulation wrote no {path}; see the log above")
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result | {"privacy": ledger_privacy(config, scenario, state_root, policies)}


def ledger_privacy(
    config: RunConfig, scenario: Scenario, state_root: Path, policies: dict[str, SitePolicy]
) -> dict[str, dict[str, float | str]]:
    """Each simulated site's ε (whole ledger, its own δ) now: what a validation's release of
    the statistics added to its training. ∞ (a non-private round) is kept as "inf"."""
    from fedcare.privacy.accounting import default_delta, epsilon_from_events
    from fedcare.privacy.ledger import PrivacyLedger

    task = get_task(config.task)
    record: dict[str, dict[str, float | str]] = {}
    for site in scenario.sites:
        events = PrivacyLedger(site_state_dir(state_root, site.name)).read()
        if not events:
            continue
        delta = policies[site.name].delta or default_delta(
            task.load_site(site.name, site.path).n_train
        )
        epsilon = epsilon_from_events(events, delta, config.accountant)
        record[site.name] = {
            "epsilon": epsilon if math.isfinite(epsilon) else "inf",
            "delta": delta,
        }
    return record


def _simulate(run_config: dict[str, Any], out_dir: Path, n_sites: int, clients: Any) -> None:
    """One run of the ServerApp and ``clients`` in Flower's simulation engine (Ray)."""
    app_dir = write_flower_app(out_dir / FLOWER_APP_DIR, run_config)
    context = Context(
        run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": max(1, min(n_sites, os.cpu_count() or 1))},
    }
    _run_simulation(
        num_supernodes=n_sites,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=clients,
        server_app=server_app,
        backend_config=backend_config,  # type: ignore[arg-type]
        server_app_context=context,
        app_dir=str(app_dir),
        is_app=True,
    )


def run_federation(
    config: RunConfig,
    scenario: Scenario,
    out_dir: Path,
    policies: dict[str, SitePolicy],
    on_round: Callable[[RoundRecord, int], None] | None = None,
    attacks: Mapping[str, Attack] | None = None,
    runtime: Mapping[str, Any] | None = None,
    resume: bool = False,
    holdout: str = HOLDOUT_TEST,
) -> list[dict[str, Any]]:
    """Simulate the federation; returns the per-round records the ServerApp wrote.

    Call :func:`load_sites` first: it validates every site's data before Ray starts. Each
    simulation starts its sites with empty state (a new experiment, a new privacy ledger).
    ``attacks`` makes the named sites misbehave (:mod:`fedcare.simulations.adversaries`).
    ``resume``: continue the interrupted run in ``out_dir`` from its last checkpoint
    (:mod:`fedcare.server.checkpoint`); the sites keep their ledgers.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out_dir / ROUNDS_FILE).unlink(missing_ok=True)
        shutil.rmtree(out_dir / SITES_DIR, ignore_errors=True)
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    run_config = simulation_run_config(config, scenario, out_dir, policies, holdout)
    run_config |= dict(runtime or {})
    run_config[RESUME_KEY] = int(resume)
    clients = adversarial_client_app(attacks) if attacks else client_app
    unsubscribe = progress.subscribe(on_round) if on_round else None
    try:
        _simulate(run_config, out_dir, len(scenario.sites), clients)
    finally:
        if unsubscribe:
            unsubscribe()
    rounds_path = out_dir / ROUNDS_FILE
    rounds: list[dict[str, Any]] = (
        json.loads(rounds_path.read_text()) if rounds_path.is_file() else []
    )
    complete = [r for r in rounds if len(r["sites"]) == len(scenario.sites)]
    if len(complete) != config.rounds + 1:
        raise FedcareError(
            f"simulation ended with {len(complete)} of {config.rounds + 1} complete rounds; "
            f"see the log above and {rounds_path}"
        )
    return rounds
