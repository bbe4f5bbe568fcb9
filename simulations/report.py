"""The run folder's ``summary.json`` (schema in README) and its plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedcare.client.policy import SitePolicy
from fedcare.config import RunConfig
from fedcare.metrics import BinaryMetrics
from fedcare.privacy.accounting import default_delta, epsilon_from_events
from fedcare.privacy.events import GAUSSIAN_KIND
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.simulations.baselines import BaselineResult
from fedcare.tasks import SiteData

ACCURACY_PLOT = "accuracy_per_site.png"
COMPARISON_PLOT = "federated_vs_baselines.png"
EPSILON_PLOT = "epsilon_per_site.png"
PERSONALIZATION_PLOT = "personalization_per_site.png"


def _figure(width: float) -> tuple[Figure, Axes]:
    """A pyplot-free figure: no global state, no GUI backend, safe in any thread."""
    fig = Figure(figsize=(width, 4.5))
    return fig, fig.add_subplot()


def _site_metrics(metrics: dict[str, BinaryMetrics]) -> dict[str, dict[str, float | None]]:
    return {name: {"accuracy": m.accuracy, "auroc": m.auroc} for name, m in sorted(metrics.items())}


def _baseline_json(result: BaselineResult) -> dict[str, Any]:
    return {"mean_accuracy": result.mean_accuracy, "sites": _site_metrics(result.sites)}


def build_summary(
    config: RunConfig,
    sites: list[SiteData],
    final_round: dict[str, Any],
    pooled: BaselineResult,
    local: dict[str, BaselineResult],
) -> dict[str, Any]:
    """The summary of one simulated run; see README "summary.json"."""
    federated = final_round["sites"]
    return {
        "scenario": config.scenario,
        "task": config.task,
        "model": str(config.model),
        "strategy": str(config.strategy),
        "secure_aggregation": config.secure_aggregation,
        "rounds": config.rounds,
        "seed": config.seed,
        "sites": {
            s.site: {
                "n_train": s.n_train,
                "n_test": s.n_test,
                "accuracy": federated[s.site]["accuracy"],
                "auroc": federated[s.site]["auroc"],
            }
            for s in sites
        },
        "mean_accuracy": final_round["mean_accuracy"],
        "baselines": {
            "pooled": _baseline_json(pooled),
            "local": {name: _baseline_json(result) for name, result in sorted(local.items())},
        },
        "privacy": None,
    }


def privacy_summary(
    config: RunConfig,
    sites: list[SiteData],
    state_dirs: dict[str, Path],
    policies: dict[str, SitePolicy],
) -> dict[str, Any]:
    """Each site's spending, recomputed from its own ledger (never from reported metrics)."""
    report: dict[str, Any] = {}
    deltas = []
    for site in sites:
        events = PrivacyLedger(state_dirs[site.site]).read()
        delta = policies[site.site].delta or default_delta(site.n_train)
        deltas.append(delta)
        trainings = [e for e in events if e.kind != GAUSSIAN_KIND]  # not the statistics' release
        # personalization trainings are recorded past the run's last round (fedcare.personalization)
        rounds = [e for e in trainings if e.round <= config.rounds]
        last = rounds[-1] if rounds else None
        report[site.site] = {
            "epsilon": epsilon_from_events(events, delta, config.accountant),  # every event
            "delta": delta,
            "noise_multiplier": last.noise_multiplier if last else None,
            "sample_rate": last.sample_rate if last else None,
            "steps": sum(e.steps for e in rounds),
            "rounds_trained": len(rounds),
            "personalization_trainings": len(trainings) - len(rounds),
            "statistics_releases": len(events) - len(trainings),
            "max_epsilon": policies[site.site].max_epsilon,
        }
    return {"delta": max(deltas), "accountant": str(config.accountant), "sites": report}


def write_plots(out_dir: Path, rounds: list[dict[str, Any]], summary: dict[str, Any]) -> list[Path]:
    """Accuracy per site per round, and federated vs local-only vs pooled per site."""
    site_names = sorted(summary["sites"])
    fig, ax = _figure(7)
    xs = [r["round"] for r in rounds]
    for name in site_names:
        ax.plot(xs, [r["sites"][name]["accuracy"] for r in rounds], marker=".", label=name)
    ax.plot(xs, [r["mean_accuracy"] for r in rounds], color="black", linewidth=2, label="mean")
    ax.set(
        xlabel="round", ylabel="test accuracy", title=f"{summary['strategy']}: accuracy per site"
    )
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    accuracy_path = out_dir / ACCURACY_PLOT
    fig.tight_layout()
    fig.savefig(accuracy_path, dpi=110)

    columns: dict[str, list[float]] = {
        "federated": [summary["sites"][n]["accuracy"] for n in site_names],
        "pooled": [summary["baselines"]["pooled"]["sites"][n]["accuracy"] for n in site_names],
    }
    for owner, result in summary["baselines"]["local"].items():
        columns[f"local: {owner}"] = [result["sites"][n]["accuracy"] for n in site_names]
    fig, ax = _figure(9)
    width = 0.8 / len(columns)
    for i, (label, values) in enumerate(columns.items()):
        ax.bar([j + i * width for j in range(len(site_names))], values, width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(site_names))], site_names)
    ax.set(ylabel="test accuracy", title="federated vs local-only vs pooled, per test site")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncols=2)
    comparison_path = out_dir / COMPARISON_PLOT
    fig.tight_layout()
    fig.savefig(comparison_path, dpi=110)
    paths = [accuracy_path, comparison_path]
    if all("personalized" in site for site in summary["sites"].values()):
        paths.append(_plot_personalization(out_dir, summary))
    if summary.get("privacy"):
        paths.append(_plot_epsilon(out_dir, rounds, summary))
    return paths


def _plot_epsilon(out_dir: Path, rounds: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    fig, ax = _figure(7)
    spent = [e for r in rounds for e in r.get("epsilon", {}).values()]
    top = max(spent, default=0.0)
    off_scale = []
    for name in sorted(summary["sites"]):
        points = [(r["round"], r["epsilon"][name]) for r in rounds if name in r.get("epsilon", {})]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=name)
        budget = summary["privacy"]["sites"][name]["max_epsilon"]
        if budget <= 3 * max(top, 1e-9):  # a far-away budget line would flatten the curves
            ax.axhline(budget, linestyle=":", linewidth=1, color="grey")
        else:
            off_scale.append(f"{name} {budget:g}")
    if off_scale:
        ax.text(0.01, 0.98, "budgets off scale: " + ", ".join(off_scale), transform=ax.transAxes,
                va="top", fontsize=8, color="grey")  # fmt: skip
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="round", ylabel="cumulative ε (site ledger)", title="privacy spent per site")
    ax.grid(alpha=0.3)
    ax.legend()
    path = out_dir / EPSILON_PLOT
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _plot_personalization(out_dir: Path, summary: dict[str, Any]) -> Path:
    """Per site, on its own test set: its local-only model, the global model, its personalized."""
    names = sorted(summary["sites"])
    columns = {
        "local-only": [summary["baselines"]["local"][n]["sites"][n]["accuracy"] for n in names],
        "global": [summary["sites"][n]["accuracy"] for n in names],
        "personalized": [summary["sites"][n]["personalized"]["accuracy"] for n in names],
    }
    fig, ax = _figure(8)
    width = 0.8 / len(columns)
    for i, (label, values) in enumerate(columns.items()):
        bars = ax.bar([j + i * width for j in range(len(names))], values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.set(ylabel="test accuracy (own test set)", title="local-only vs global vs personalized")
    ax.set_ylim(0, 1.12)  # room for the legend above the bars
    ax.legend(fontsize=8, loc="upper center", ncols=3)
    path = out_dir / PERSONALIZATION_PLOT
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
