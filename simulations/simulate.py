"""One complete simulated study: federation, baselines, summary.json and plots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcare.atomic import write_json_atomic
from fedcare.config import RunConfig
from fedcare.server.tracking import RoundRecord
from fedcare.simulations.baselines import local_baselines, pooled_baseline
from fedcare.simulations.report import build_summary, write_plots
from fedcare.simulations.runner import load_sites, run_federation
from fedcare.simulations.scenarios import get_scenario
from fedcare.tasks import get_task

SUMMARY_FILE = "summary.json"


def simulate(
    config: RunConfig,
    out_dir: Path,
    on_round: Callable[[RoundRecord, int], None] | None = None,
) -> dict[str, Any]:
    """Run the federation and its baselines; write the run folder; return the summary."""
    scenario = get_scenario(config.scenario, config.task)
    sites = load_sites(config, scenario)
    rounds = run_federation(config, scenario, out_dir, on_round=on_round)
    task = get_task(config.task)
    summary = build_summary(
        config,
        sites,
        final_round=rounds[-1],
        pooled=pooled_baseline(task, config, sites),
        local=local_baselines(task, config, sites),
    )
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    write_plots(out_dir, rounds, summary)
    return summary
