"""The ``fedcare`` command line. Handlers live here; the work lives in the packages.

Every fedcare error becomes one line on stderr (``error: ...``) and its documented exit code.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from fedcare.errors import ConfigError, FedcareError

app = typer.Typer(
    name="fedcare",
    help="Federated learning across hospitals, on Flower, PyTorch and Opacus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


@app.callback()
def _root() -> None:
    """Federated learning across hospitals, on Flower, PyTorch and Opacus."""


def _quiet_environment() -> None:
    """No network here and no telemetry from a clinical tool."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def _configure_logging(verbose: bool) -> None:
    """fedcare's own logs to stderr; Flower's console handler only warns unless verbose."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    from flwr.supercore.logger import update_console_handler

    logging.getLogger("flwr").propagate = False
    update_console_handler(level=logging.DEBUG if verbose else logging.WARNING)


def _run_or_exit(action: Callable[[], T]) -> T:
    try:
        return action()
    except FedcareError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=int(exc.exit_code)) from None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command()
def simulate(
    config: Annotated[Path | None, typer.Option("--config", help="TOML run config.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default runs/<time>).")
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="fedavg, fedprox, fedadam or fedyogi.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="logreg or mlp.")] = None,
    weighting: Annotated[str | None, typer.Option(help="uniform or examples.")] = None,
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
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show Flower's and Ray's logs.")
    ] = False,
) -> None:
    """Simulate a federation (default: the four real heart-disease hospitals) with baselines."""
    _quiet_environment()
    from fedcare.config import load_config

    started = time.perf_counter()
    run_config = _run_or_exit(
        lambda: load_config(config).replace(
            rounds=rounds, strategy=strategy, model=model, weighting=weighting,
            local_epochs=local_epochs, batch_size=batch_size, learning_rate=learning_rate,
            server_learning_rate=server_learning_rate, proximal_mu=proximal_mu, seed=seed,
            scenario=scenario, dp=dp, target_epsilon=target_epsilon,
            noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, accountant=accountant,
        )
    )  # fmt: skip
    budgets = _run_or_exit(lambda: _parse_budgets(site_budget or []))
    out_dir = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    _configure_logging(verbose)
    console.print(
        f"fedcare simulate: scenario [bold]{run_config.scenario}[/], strategy "
        f"[bold]{run_config.strategy}[/], model {run_config.model}, {run_config.rounds} rounds "
        f"-> {out_dir}"
    )
    from fedcare.simulations import simulate as run_simulation

    summary = _run_or_exit(
        lambda: run_simulation(run_config, out_dir, on_round=_print_round, site_budgets=budgets)
    )
    _print_summary(summary)
    console.print(f"run folder: {out_dir}   (summary.json, rounds.json, plots)")
    console.print(f"finished in {time.perf_counter() - started:.1f} s")


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


def _print_round(record: Any, total: int) -> None:
    parts = []
    for name, site in sorted(record.sites.items()):
        part = f"{name[:5]} {site.accuracy:.3f}"
        if name in record.epsilon:
            part += f" ε{record.epsilon[name]:.2f}"
        if name in record.refused:
            part += f" [refused: {record.refused[name]}]"
        parts.append(part)
    console.print(
        f"round {record.round:>3}/{total}  mean {record.mean_accuracy:.3f} | {' '.join(parts)}"
    )


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(
        title=f"Per-site test accuracy ({summary['strategy']}, {summary['rounds']} rounds)"
    )
    privacy = summary.get("privacy")
    columns = ["site", "n_train", "n_test", "federated", "AUROC", "local-only", "pooled"]
    columns += ["ε spent", "σ"] if privacy else []
    for column in columns:
        table.add_column(column, justify="left" if column == "site" else "right")
    baselines = summary["baselines"]
    for name, site in summary["sites"].items():
        row = [
            name, str(site["n_train"]), str(site["n_test"]), _fmt(site["accuracy"]),
            _fmt(site["auroc"]), _fmt(baselines["local"][name]["sites"][name]["accuracy"]),
            _fmt(baselines["pooled"]["sites"][name]["accuracy"]),
        ]  # fmt: skip
        if privacy:
            spent = privacy["sites"][name]
            row += [
                f"{spent['epsilon']:.3f} / {spent['max_epsilon']:g}",
                _fmt(spent["noise_multiplier"]),
            ]
        table.add_row(*row)
    best_local = max(result["mean_accuracy"] for result in baselines["local"].values())
    table.add_row(
        "mean", "", "", f"[bold]{summary['mean_accuracy']:.3f}[/]", "",
        f"best {best_local:.3f}", _fmt(baselines["pooled"]["mean_accuracy"]),
        *(["", ""] if privacy else []),
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
    console.print(
        "local-only = each site's own model on its own test set; its mean row is the best "
        "local model's mean over all sites' test sets"
    )


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)


if __name__ == "__main__":
    main()
