"""Benchmarks that print measured figures: ``fedcare bench ...``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fedcare.cli.common import (
    configure_logging,
    console,
    quiet_environment,
    run_or_exit,
)

if TYPE_CHECKING:
    from fedcare.simulations.benchmarks.serving import ServingReport

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


@bench_app.command("serve")
def bench_serve(
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="A signed release to serve (default: an untrained model, signed here).",
            resolve_path=True,
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(help="The release's public key (with --bundle).", resolve_path=True),
    ] = None,
    seconds: Annotated[float, typer.Option(min=0.1, help="Measured seconds per cell.")] = 4.0,
    warmup: Annotated[
        float, typer.Option(min=0.0, help="Seconds of each cell not counted (warm-up).")
    ] = 1.0,
    repetitions: Annotated[
        int, typer.Option(min=1, help="Repetitions of each cell (figures are medians).")
    ] = 3,
    concurrency: Annotated[
        str, typer.Option(help="Comma-separated numbers of concurrent clients.")
    ] = "1,16",
    batch: Annotated[str, typer.Option(help="Comma-separated rows per request.")] = "1,64",
    json_out: Annotated[
        Path,
        typer.Option("--json", help="Where to write every figure as JSON.", resolve_path=True),
    ] = Path("bench-serve.json"),
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Where to draw requests/s per cell (PNG); none if unset.", resolve_path=True
        ),
    ] = None,
) -> None:
    """Requests/s and p50/p99 latency of fedcare serve and KServe's own ModelServer serving the
    same signed release, gRPC and REST, side by side in one run (needs the bench extra)."""
    quiet_environment()
    configure_logging(verbose=False)
    from fedcare.atomic import write_json_atomic
    from fedcare.errors import ConfigError
    from fedcare.simulations.benchmarks.serving import KSERVE, run_serving_benchmark

    def measure() -> ServingReport:
        if (bundle is None) != (key is None):
            raise ConfigError("bench serve: give --bundle and --key together, or neither")
        return run_serving_benchmark(
            bundle,
            key,
            seconds=seconds,
            warmup_s=warmup,
            repetitions=repetitions,
            concurrencies=_counts(concurrency, "--concurrency"),
            batches=_counts(batch, "--batch"),
            progress=lambda text: console.print(text),
        )

    started = time.perf_counter()
    report = run_or_exit(measure)
    table = Table(
        title=f"Open Inference Protocol serving, median of {repetitions} x {seconds:g} s per cell "
        f"({warmup:g} s warm-up left out); one load generator for every row"
    )
    columns = ("protocol", "clients", "batch", "server", "req/s", "p50 ms", "p99 ms",
               "req/s vs KServe", "p99 vs KServe")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("protocol", "server") else "right")
    cells = dict.fromkeys(row.cell for row in report.rows)
    for cell in cells:
        for row in (r for r in report.rows if r.cell == cell):
            versus = ("", "") if row.server == KSERVE else (
                f"{report.throughput_ratio(row):.2f}x", f"{report.p99_ratio(row):.2f}x"
            )  # fmt: skip
            table.add_row(
                row.protocol, str(row.concurrency), str(row.batch), row.server,
                f"{row.requests_per_s:.0f}", f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}", *versus,
            )  # fmt: skip
        table.add_section()
    console.print(table)
    for server, what in report.settings["rows"].items():
        console.print(f"{server}: {what}", highlight=False)
    load = report.settings["load_average_before"]
    console.print(
        f"host: {report.settings['cpus']} CPUs shared by the servers and the load generator; "
        f"load average {load[0]:.2f} before, {report.settings['load_average_after'][0]:.2f} after"
    )
    for row in report.rows:
        if row.server != KSERVE:
            console.print(
                f"{row.server}, {row.protocol} {row.concurrency} client(s), batch {row.batch}: "
                f"{report.throughput_ratio(row):.2f}x KServe's req/s at "
                f"{report.p99_ratio(row):.2f}x its p99 - goal (>= 1x at <= 1x) "
                f"{_verdict(report.goal_met(row))}"
            )
    write_json_atomic(json_out, report.to_json())
    console.print(f"figures written to {json_out}")
    if plot is not None:
        from fedcare.simulations.benchmarks.serving import plot_report

        plot_report(report, plot)
        console.print(f"plot written to {plot}")
    console.print(f"benchmark took {time.perf_counter() - started:.0f} s")


def _counts(text: str, option: str) -> tuple[int, ...]:
    from fedcare.errors import ConfigError

    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise ConfigError(f"{option} {text!r}: give positive whole numbers separated by commas")
    return counts
