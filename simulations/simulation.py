"""One complete simulated study: federation, baselines, summary.json and plots."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedcare.atomic import write_json_atomic
from fedcare.client.policy import DEFAULT_MAX_EPSILON, SitePolicy
from fedcare.client.site import SiteIdentity, load_site_data
from fedcare.config import Preprocessing, RunConfig
from fedcare.errors import ConfigError
from fedcare.feature_stats import FeatureStats
from fedcare.personalization import (
    DpAccounting,
    PersonalizationSettings,
    default_grid,
    personalize,
)
from fedcare.privacy.accounting import default_delta
from fedcare.privacy.budget import DpRequest
from fedcare.runtime_keys import INITIAL_MODEL_KEY
from fedcare.server.app import WEIGHTS_FILE
from fedcare.server.model_validation import PREPROCESSING_FILE
from fedcare.server.tracking import RoundRecord
from fedcare.simulations.adversaries import Attack
from fedcare.simulations.baselines import local_baselines, pooled_baseline
from fedcare.simulations.report import build_summary, privacy_summary, write_plots
from fedcare.simulations.runner import load_sites, run_federation, site_state_dir
from fedcare.simulations.scenarios import Scenario, get_scenario
from fedcare.tasks import SiteData, get_task
from fedcare.training import evaluate
from fedcare.weights import read_weights

SUMMARY_FILE = "summary.json"
SIMULATION_FILE = "simulation.json"  # the simulation's own arguments, for --resume

log = logging.getLogger(__name__)


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
    started = time.monotonic()
    personal = personalize_sites(config, scenario, out_dir, policies)  # before ε is reported
    log.info("personalization took %.1f s", time.monotonic() - started)
    for name, result in personal.items():
        summary["sites"][name]["personalized"] = result
    summary["personalized_mean_accuracy"] = sum(r["accuracy"] for r in personal.values()) / len(
        personal
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


def _personalization_data(
    config: RunConfig, scenario: Scenario, out_dir: Path, policies: Mapping[str, SitePolicy]
) -> list[SiteData]:
    """Each site's split as its federated rounds saw it (the federation's statistics when the
    run standardised with them)."""
    if config.preprocessing is not Preprocessing.FEDERATION:
        return load_sites(config, scenario)
    task = get_task(config.task)
    record = json.loads((out_dir / PREPROCESSING_FILE).read_text(encoding="utf-8"))
    stats = FeatureStats(tuple(task.feature_names), tuple(record["mean"]), tuple(record["std"]))
    return [
        load_site_data(
            config.task,
            SiteIdentity(s.name, s.path, site_state_dir(out_dir, s.name), policies[s.name]),
            stats,
        )
        for s in scenario.sites
    ]


def _personalization_budget(config: RunConfig, policy: SitePolicy) -> float:
    """The ε a site's personalization may take its ledger to: its own max-epsilon, and with
    --target-epsilon no more than that target, which promises the run's total ε per site
    (README, "Differential privacy"). The federated rounds are calibrated to spend the target,
    so under a target a DP personalization runs only in what they left, usually nothing."""
    if config.target_epsilon > 0:
        return min(policy.max_epsilon, config.target_epsilon)
    return policy.max_epsilon


def personalize_sites(
    config: RunConfig, scenario: Scenario, out_dir: Path, policies: Mapping[str, SitePolicy]
) -> dict[str, dict[str, Any]]:
    """Each site personalizes the final global model on its own training rows (choosing the
    setting on a validation part of them, fedcare.personalization) and scores it on its own
    test rows; under DP every training is spent on the site's ledger. Returns the per-site
    ``personalized`` entries of summary.json (README, "The run folder")."""
    task = get_task(config.task)
    global_state = read_weights(out_dir / WEIGHTS_FILE)
    settings = PersonalizationSettings(
        default_grid(config.learning_rate, config.dp), config.batch_size, config.seed
    )
    run_id = None
    if config.dp:
        from fedcare.run_record import RunRecord

        run_id = RunRecord.read(out_dir).run_id
    request = DpRequest(
        config.target_epsilon,
        config.noise_multiplier,
        config.max_grad_norm,
        config.rounds,
        config.accountant,
    )
    report: dict[str, dict[str, Any]] = {}
    for data in _personalization_data(config, scenario, out_dir, policies):
        policy = policies[data.site]
        dp = None
        if run_id is not None:
            dp = DpAccounting(
                request=request,
                state_dir=site_state_dir(out_dir, data.site),
                run_id=run_id,
                first_round=config.rounds + 1,
                delta=policy.delta or default_delta(data.n_train),
                max_epsilon=_personalization_budget(config, policy),
            )
        result = personalize(task, config.model, global_state, data, settings, dp)
        model = task.build_model(config.model, seed=config.seed)
        model.load_state_dict(result.state, strict=True)
        test = evaluate(model, task.loss(), data.x_test, data.y_test)
        chosen = result.chosen
        report[data.site] = {
            "accuracy": test.accuracy,
            "auroc": test.auroc,
            "method": str(chosen.method),
            "epochs": chosen.epochs,
            "learning_rate": chosen.learning_rate,
            "lambda": chosen.lam,
            "validation_accuracy": result.chosen_validation.accuracy,
            "global_validation_accuracy": result.global_validation.accuracy,
            "validation_auroc": result.chosen_validation.auroc,
            "global_validation_auroc": result.global_validation.auroc,
            "refit": result.refit,
            "dp_trainings": result.trainings,
            "stopped": result.stopped,
        }
    return report
