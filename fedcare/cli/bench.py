"""Benchmarks that print measured figures: ``fedcare bench ...``."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from fedcare.cli.common import (
    configure_logging,
    console,
    quiet_environment,
)

bench_app = typer.Typer(help="Benchmarks that print measured figures.", no_args_is_help=True)


@bench_app.command("dp")
def bench_dp(
    repetitions: Annotated[int, typer.Option(help="Timed repetitions per variant (median).")] = 7,
    synthetic_rows: Annotated[
        int, typer.Option(help="Rows of the synthetic tabular set.")
    ] = 20_000,
    threads: Annotated[str, typer.Option(help="Comma-separated torch thread counts.")] = "1,2",
) -> None:
    """One local epoch with Opacus DP-SGD vs without, per model, mode and thread count."""
    from fedcare.simulations.benchmarks import run_dp_benchmark
    from fedcare.simulations.scenarios import embedded_data_dir

    counts = tuple(int(t) for t in threads.split(","))
    started = time.perf_counter()
    rows = run_dp_benchmark(
        embedded_data_dir() / "processed.cleveland.data",
        repetitions=repetitions,
        synthetic_rows=synthetic_rows,
        thread_counts=counts,
        progress=lambda text: console.print(f"timing {text} ..."),
    )
    table = Table(title=f"DP-SGD vs plain local epoch (median of {repetitions})")
    for column in ("workload", "threads", "variant", "median ms", "DP / plain"):
        table.add_column(column, justify="left" if column in ("workload", "variant") else "right")
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        table.add_row(
            row.workload, str(row.threads), row.variant, f"{row.median_s * 1000:.1f}", ratio
        )
    console.print(table)
    for workload in dict.fromkeys(r.workload for r in rows):
        for count in counts:
            candidates = [
                r for r in rows if r.workload == workload and r.threads == count and r.ratio
            ]
            best = min(candidates, key=lambda r: r.median_s)
            console.print(
                f"best DP on {workload}, {count} thread(s): {best.variant} {best.ratio:.2f}x plain"
            )
    console.print(f"benchmark took {time.perf_counter() - started:.0f} s")


@bench_app.command("latency")
def bench_latency(
    rounds: Annotated[int, typer.Option(min=1, help="Rounds per environment.")] = 4,
    secagg: Annotated[
        bool, typer.Option(help="Also time fedcare deployed with SecAgg+ (same sites).")
    ] = True,
) -> None:
    """Seconds per round of 3 hospitals: fedcare in simulation, deployed, deployed with SecAgg+,
    against stock Flower's default deployment measured in the same run."""
    quiet_environment()
    configure_logging(verbose=False)
    from fedcare.simulations.benchmarks.round_latency import run_latency_benchmark

    started = time.perf_counter()
    report = run_latency_benchmark(rounds, secagg, progress=lambda text: console.print(text))
    table = Table(
        title=f"Seconds per round, 3 sites, median of {rounds} rounds (each row ran {rounds + 1}; "
        "its first round has no start mark in fedcare and is left out in every row alike)"
    )
    for column in ("environment", "median s/round", "vs stock default", "each round (s)"):
        table.add_column(column, justify="left" if column == "environment" else "right")
    for row in report.rows:
        table.add_row(
            row.environment,
            f"{row.median_round_s:.2f}",
            f"{report.ratio_vs_stock(row):.2f}x",
            " ".join(f"{t:.1f}" for t in row.round_times_s),
        )
    console.print(table)
    evidence = report.stock
    isolation = sum("--isolation" not in argv for argv in evidence.supernode_argv)
    superexecs = sum(any("flower-superexec" in c for c in g) for g in evidence.supernode_groups)
    console.print(
        f"stock reference: {isolation} of {len(evidence.supernode_argv)} SuperNodes with Flower's "
        f"default isolation, {superexecs} running their own flower-superexec; "
        f"{evidence.clientapp_calls} ClientApp calls ran in {evidence.clientapp_processes} "
        "flwr-clientapp processes"
    )
    deployed = report.deployed_vs_stock
    console.print(
        f"fedcare deployed / stock Flower default: {deployed:.2f}x (goal <= 0.5) "
        f"- {_verdict(deployed <= 0.5)}"
    )
    secure = report.secagg_vs_plain
    if secure is not None:
        console.print(
            f"SecAgg+ round / plain fedcare round: {secure:.2f}x (goal <= 2) "
            f"- {_verdict(secure <= 2)}"
        )
    console.print(f"benchmark took {time.perf_counter() - started:.0f} s")


def _verdict(met: bool) -> str:
    return "met" if met else "not met"
