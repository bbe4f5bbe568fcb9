"""One complete simulated study: federation, baselines, summary.json and plots."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedcare.atomic import write_json_atomic
from fedcare.client.policy import DEFAULT_MAX_EPSILON, SitePolicy
from fedcare.config import RunConfig
from fedcare.errors import ConfigError
from fedcare.runtime_keys import INITIAL_MODEL_KEY
from fedcare.server.tracking import RoundRecord
from fedcare.simulations.adversaries import Attack
from fedcare.simulations.baselines import local_baselines, pooled_baseline
from fedcare.simulations.report import build_summary, privacy_summary, write_plots
from fedcare.simulations.runner import load_sites, run_federation, site_state_dir
from fedcare.simulations.scenarios import Scenario, get_scenario
from fedcare.tasks import get_task

SUMMARY_FILE = "summary.json"
SIMULATION_FILE = "simulation.json"  # the simulation's own arguments, for --resume


def resume_settings(out_dir: Path) -> tuple[RunConfig, dict[str, Any]]:
    """The run config and :func:`simulate` arguments of the simulation in ``out_dir``."""
    from fedcare.run_record import RunRecord

    settings_path = out_dir / SIMULATION_FILE
    if not settings_path.is_file():
        raise ConfigError(
            f"{settings_path} is missing: {out_dir} is not a simulation folder fedcare can "
            "resume; give the --out folder of an interrupted fedcare simulate"
        )
    config = RunConfig.from_run_config(RunRecord.read(out_dir).config)
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    return config, settings


def site_policies(
    config: RunConfig,
    scenario: Scenario,
    budgets: Mapping[str, float] | None,
    delta: float | None = None,
) -> dict[str, SitePolicy]:
    """Each simulated site's own policy: its budget (default 10), its δ (default
    ``min(1e-5, 1/(2n))``) and DP required iff ``--dp``."""
    budgets = dict(budgets or {})
    unknown = sorted(set(budgets) - {s.name for s in scenario.sites})
    if unknown:
        names = ", ".join(s.name for s in scenario.sites)
        raise ConfigError(f"site budget for unknown site(s) {', '.join(unknown)}; sites: {names}")
    return {
        s.name: SitePolicy(
            max_epsilon=budgets.get(s.name, DEFAULT_MAX_EPSILON), delta=delta, require_dp=config.dp
        )
        for s in scenario.sites
    }


def simulate(
    config: RunConfig,
    out_dir: Path,
    on_round: Callable[[RoundRecord, int], None] | None = None,
    site_budgets: Mapping[str, float] | None = None,
    site_delta: float | None = None,
    attacks: Mapping[str, Attack] | None = None,
    initial_model: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the federation and its baselines; write the run folder; return the summary.

    ``initial_model``: weights to start from instead of the seed's fresh model. ``resume``:
    continue the interrupted simulation in ``out_dir`` (:func:`resume_settings` gives the
    arguments it was started with)."""
    scenario = get_scenario(config.scenario, config.task)
    sites = load_sites(config, scenario)
    policies = site_policies(config, scenario, site_budgets, site_delta)
    if initial_model is not None and not initial_model.is_file():
        raise ConfigError(f"--initial-model {initial_model}: no such weights file")
    runtime = {INITIAL_MODEL_KEY: str(initial_model)} if initial_model else {}
    if not resume:  # what --resume needs besides the run config (run.record.json has that)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            out_dir / SIMULATION_FILE,
            {
                "site_budgets": dict(site_budgets or {}),
                "site_delta": site_delta,
                "attacks": [f"{site}={kind}" for site, kind in sorted((attacks or {}).items())],
                "initial_model": str(initial_model) if initial_model else None,
            },
        )
    rounds = run_federation(
        config, scenario, out_dir, policies, on_round, attacks, runtime, resume=resume
    )
    task = get_task(config.task)
    summary = build_summary(
        config,
        sites,
        final_round=rounds[-1],
        pooled=pooled_baseline(task, config, sites),
        local=local_baselines(task, config, sites),
    )
    if config.dp:
        states = {s.site: site_state_dir(out_dir, s.site) for s in sites}
        summary["privacy"] = privacy_summary(config, sites, states, policies)
    summary["refusals"] = [
        {"site": site, "round": r["round"], "reason": reason}
        for r in rounds
        for site, reason in r.get("refused", {}).items()
    ]
    summary["rejected"] = [
        {"site": site, "round": r["round"], "reason": reason}
        for r in rounds
        for site, reason in r.get("rejected", {}).items()
    ]
    summary["attacks"] = {site: str(kind) for site, kind in sorted((attacks or {}).items())}
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    write_plots(out_dir, rounds, summary)
    return summary
