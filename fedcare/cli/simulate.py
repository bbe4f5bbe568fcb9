"""Researchers' local multi-site simulations: ``fedcare simulate``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedcare.cli.common import (
    InitialModelOption,
    SecureAggregationOption,
    configure_logging,
    console,
    end_of_run,
    fmt,
    quiet_environment,
    refuse_options_with_resume,
    run_or_exit,
)
from fedcare.errors import ConfigError


def simulate(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML run config.", resolve_path=True)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run folder (default runs/<time>).", resolve_path=True),
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="fedavg, fedprox, fedadam, fedyogi; robust: fedtrimmedavg, fedmedian, krum."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="logreg or mlp.")] = None,
    weighting: Annotated[str | None, typer.Option(help="uniform or examples.")] = None,
    preprocessing: Annotated[
        str | None,
        typer.Option(help="federation (default: noised, on each ledger) or site (own statistics)."),
    ] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Local batch size.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Local SGD learning rate.")] = None,
    server_learning_rate: Annotated[float | None, typer.Option(help="FedAdam/FedYogi eta.")] = None,
    proximal_mu: Annotated[float | None, typer.Option(help="FedProx mu.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for model init and shuffling.")] = None,
    scenario: Annotated[str | None, typer.Option(help="Federation to simulate.")] = None,
    dp: Annotated[bool | None, typer.Option("--dp/--no-dp", help="DP-SGD at every site.")] = None,
    target_epsilon: Annotated[
        float | None, typer.Option(help="DP: ε each site may spend on this run.")
    ] = None,
    noise_multiplier: Annotated[
        float | None, typer.Option(help="DP: fixed noise multiplier.")
    ] = None,
    max_grad_norm: Annotated[
        float | None, typer.Option(help="DP: per-sample clipping norm.")
    ] = None,
    accountant: Annotated[str | None, typer.Option(help="DP: rdp or prv.")] = None,
    site_budget: Annotated[
        list[str] | None,
        typer.Option(help="A simulated site's own max ε, as SITE=EPS (repeatable)."),
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="DP: every simulated site's δ (default min(1e-5, 1/(2n))).")
    ] = None,
    secure_aggregation: SecureAggregationOption = None,
    secagg_num_shares: Annotated[
        float | None, typer.Option(help="SecAgg+ shares: fraction of sites (<= 1) or a count.")
    ] = None,
    secagg_threshold: Annotated[
        float | None, typer.Option(help="SecAgg+ shares needed to unmask: fraction or count.")
    ] = None,
    max_update_norm: Annotated[
        float | None, typer.Option(help="Reject (or, with SecAgg+, clip) updates above this norm.")
    ] = None,
    attack: Annotated[
        list[str] | None,
        typer.Option(
            help="Make a simulated site misbehave, as SITE=KIND (nan, wrong-shape, scale100, "
            "dropout); repeatable."
        ),
    ] = None,
    initial_model: InitialModelOption = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the interrupted simulation in this run folder from its last "
            "complete round, with its own settings (give no other option).",
            resolve_path=True,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show Flower's and Ray's logs.")
    ] = False,
) -> None:
    """Simulate a federation (default: the four real heart-disease hospitals) with baselines."""
    quiet_environment()
    from fedcare.config import load_config

    started = time.perf_counter()
    if resume is not None:
        options = {
            name: value
            for name, value in sorted(locals().items())
            if name not in ("resume", "verbose", "started", "load_config")
        }
        refuse_options_with_resume(options)
        _resume(resume, verbose, started)
        return
    run_config = run_or_exit(
        lambda: load_config(config).replace(
            rounds=rounds, strategy=strategy, model=model, weighting=weighting,
            preprocessing=preprocessing,
            local_epochs=local_epochs, batch_size=batch_size, learning_rate=learning_rate,
            server_learning_rate=server_learning_rate, proximal_mu=proximal_mu, seed=seed,
            scenario=scenario, dp=dp, target_epsilon=target_epsilon,
            noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, accountant=accountant,
            secure_aggregation=secure_aggregation, secagg_num_shares=secagg_num_shares,
            secagg_threshold=secagg_threshold, max_update_norm=max_update_norm,
        )
    )  # fmt: skip
    budgets = run_or_exit(lambda: _parse_budgets(site_budget or []))
    attacks = run_or_exit(lambda: _parse_attacks(run_config, attack or []))
    out_dir = out or Path("runs").resolve() / time.strftime("%Y%m%d-%H%M%S")
    configure_logging(verbose)
    console.print(
        f"fedcare simulate: scenario [bold]{run_config.scenario}[/], strategy "
        f"[bold]{run_config.strategy}[/], model {run_config.model}, {run_config.rounds} rounds "
        f"-> {out_dir}"
    )
    from fedcare.simulations import simulate as run_simulation

    summary = run_or_exit(
        lambda: run_simulation(
            run_config,
            out_dir,
            on_round=_print_round,
            site_budgets=budgets,
            site_delta=delta,
            attacks=attacks,
            initial_model=initial_model,
        )
    )
    _finish(summary, out_dir, started)


def _finish(summary: dict[str, Any], out_dir: Path, started: float) -> None:
    _print_summary(summary)
    console.print(f"run folder: {out_dir}   (summary.json, rounds.json, plots)")
    console.print(f"finished in {time.perf_counter() - started:.1f} s")
    from fedcare.runtime_keys import ROUNDS_FILE
    from fedcare.simulations.runner import site_state_dir

    records = json.loads((out_dir / ROUNDS_FILE).read_text())
    end_of_run(records, lambda site: str(site_state_dir(out_dir, site)))


def _resume(out_dir: Path, verbose: bool, started: float) -> None:
    """``fedcare simulate --resume DIR``: the interrupted run, from its last checkpoint."""
    from fedcare.simulations import simulate as run_simulation
    from fedcare.simulations.simulation import resume_settings

    run_config, settings = run_or_exit(lambda: resume_settings(out_dir))
    attacks = run_or_exit(lambda: _parse_attacks(run_config, settings["attacks"]))
    configure_logging(verbose)
    console.print(f"fedcare simulate: resuming {out_dir} ({run_config.rounds} rounds)")
    initial = settings["initial_model"]
    summary = run_or_exit(
        lambda: run_simulation(
            run_config,
            out_dir,
            on_round=_print_round,
            site_budgets=settings["site_budgets"],
            site_delta=settings["site_delta"],
            attacks=attacks,
            initial_model=Path(initial) if initial else None,
            resume=True,
        )
    )
    _finish(summary, out_dir, started)


def _parse_budgets(values: list[str]) -> dict[str, float]:
    budgets: dict[str, float] = {}
    for value in values:
        name, _, number = value.partition("=")
        try:
            budgets[name.strip()] = float(number)
        except ValueError:
            raise ConfigError(
                f"--site-budget {value!r}: expected SITE=EPSILON, e.g. va=0.5"
            ) from None
    return budgets


def _parse_attacks(run_config: Any, values: list[str]) -> dict[str, Any]:
    if not values:
        return {}
    from fedcare.simulations.adversaries import parse_attacks
    from fedcare.simulations.scenarios import get_scenario

    scenario = get_scenario(run_config.scenario, run_config.task)
    return parse_attacks(values, [site.name for site in scenario.sites])


def _print_round(record: Any, total: int) -> None:
    parts = []
    for name, site in sorted(record.sites.items()):
        part = f"{name[:5]} {site.accuracy:.3f}"
        if name in record.epsilon:
            part += f" ε{record.epsilon[name]:.2f}"
        if name in record.refused:
            part += f" [refused: {record.refused[name]}]"
        if name in record.rejected:
            part += " [update rejected]"
        parts.append(part)
    console.print(
        f"round {record.round:>3}/{total}  mean {record.mean_accuracy:.3f} | {' '.join(parts)}"
    )


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(
        title=f"Per-site test accuracy ({summary['strategy']}, {summary['rounds']} rounds)"
    )
    privacy = summary.get("privacy")
    personal = all("personalized" in site for site in summary["sites"].values())
    columns = ["site", "train", "test", "federated", "AUROC", "local"]
    columns += ["personal"] if personal else []
    columns += ["pooled"]
    columns += ["ε / max", "σ"] if privacy else []
    for column in columns:
        table.add_column(column, justify="left" if column == "site" else "right")
    baselines = summary["baselines"]
    for name, site in summary["sites"].items():
        row = [
            name, str(site["n_train"]), str(site["n_test"]), fmt(site["accuracy"]),
            fmt(site["auroc"]), fmt(baselines["local"][name]["sites"][name]["accuracy"]),
        ]  # fmt: skip
        row += [fmt(site["personalized"]["accuracy"])] if personal else []
        row += [fmt(baselines["pooled"]["sites"][name]["accuracy"])]
        if privacy:
            spent = privacy["sites"][name]
            row += [
                f"{spent['epsilon']:.3f} / {spent['max_epsilon']:g}",
                fmt(spent["noise_multiplier"]),
            ]
        table.add_row(*row)
    best_local = max(result["mean_accuracy"] for result in baselines["local"].values())
    table.add_row(
        "mean", "", "", f"[bold]{summary['mean_accuracy']:.3f}[/]", "", f"best {best_local:.3f}",
        *([fmt(summary["personalized_mean_accuracy"])] if personal else []),
        fmt(baselines["pooled"]["mean_accuracy"]), *(["", ""] if privacy else []),
    )  # fmt: skip
    console.print(table)
    if privacy:
        console.print(
            f"ε from each site's own ledger, {privacy['accountant']} accountant, δ ≤ "
            f"{privacy['delta']:g}; baselines are trained without DP"
        )
    for refusal in summary.get("refusals", []):
        site, number, reason = refusal["site"], refusal["round"], refusal["reason"]
        console.print(f"[yellow]site {site} refused round {number}: {reason}[/]")
    for rejection in summary.get("rejected", []):
        site, number, reason = rejection["site"], rejection["round"], rejection["reason"]
        console.print(f"[yellow]round {number}: {site}'s update rejected: {reason}[/]")
    console.print(
        "local = each site's own model on its own test set; its mean row is the best local "
        "model's mean over all sites' test sets"
    )
    if personal:
        console.print(
            "personal = the global model personalized at each site on its own training rows "
            "(settings chosen on a validation part of them), scored on its own test set"
        )
