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
    from fedcare.simulations.benchmarks.accuracy import AccuracyReport
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


@bench_app.command("accuracy")
def bench_accuracy(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for every run's folder (runs/CONFIG/seed-N), accuracy.json and "
            "accuracy.png (default runs/bench-accuracy-<time>).",
            resolve_path=True,
        ),
    ] = None,
    seeds: Annotated[
        str, typer.Option(help="Comma-separated seeds (FLamby's protocol: 42-46).")
    ] = "42,43,44,45,46",
    configurations: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated subset of: default, each strategy (fedavg, fedprox, fedadam, "
            "fedyogi, fedtrimmedavg, fedmedian, krum), dp (default: all)."
        ),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Rounds for every configuration, for a quick check (default: the run "
            "config's own; anything else is not the protocol).",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show fedcare's, Flower's and Ray's logs.")
    ] = False,
) -> None:
    """FLamby's five-seed protocol on the embedded heart-disease federation: the default run,
    each strategy, DP at ε ≤ 1 and personalization, beside FLamby's published figures, with
    issue #13's goals marked MET or NOT MET (50 simulations, about 20-30 minutes on 2 cores)."""
    quiet_environment()
    from fedcare.atomic import write_json_atomic
    from fedcare.config import RunConfig
    from fedcare.simulations.benchmarks import accuracy

    seed_list = run_or_exit(lambda: _seeds(seeds))
    names = None if configurations is None else [n.strip() for n in configurations.split(",")]
    chosen = run_or_exit(lambda: accuracy.configurations(RunConfig().replace(rounds=rounds), names))
    out_dir = out or Path("runs").resolve() / time.strftime("bench-accuracy-%Y%m%d-%H%M%S")
    configure_logging(verbose)
    started = time.perf_counter()
    runs = sum(c.config is not None and c.same_as is None for c in chosen) * len(seed_list)
    console.print(
        f"fedcare bench accuracy: {runs} simulations ({len(chosen)} configurations x seeds "
        f"{','.join(map(str, seed_list))}) -> {out_dir}",
        highlight=False,
    )
    report = run_or_exit(
        lambda: accuracy.run_accuracy_benchmark(
            chosen,
            seed_list,
            out_dir,
            progress=lambda text: console.print(text, highlight=False),
            overrides={"rounds": rounds} if rounds is not None else {},
        )
    )
    _print_accuracy(report)
    figures, plot = out_dir / accuracy.ACCURACY_JSON, out_dir / accuracy.ACCURACY_PLOT
    write_json_atomic(figures, report.to_json())
    accuracy.plot_report(report, plot)
    console.print(f"figures: {figures}; plot: {plot}", highlight=False)
    console.print(f"benchmark took {time.perf_counter() - started:.0f} s")


def _seeds(text: str) -> tuple[int, ...]:
    from fedcare.errors import ConfigError

    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise ConfigError(
            f"--seeds {text!r}: give distinct whole numbers >= 0 separated by commas, "
            "e.g. 42,43,44,45,46"
        )
    return values


def _print_accuracy(report: AccuracyReport) -> None:
    from fedcare.cli.common import fmt

    seeds = ",".join(str(s) for s in report.seeds)
    table = Table(
        title=f"Accuracy, mean over the 4 sites' test sets (FLamby's metric), seeds {seeds}"
    )
    for column in ("configuration", "mean", "sd", "min-max", "per seed", "FLamby", "note"):
        table.add_column(column, justify="left" if column in ("configuration", "note") else "right")
    for row in report.rows:
        spread = row.spread
        flamby = (
            f"{row.flamby_value:.3f} ({row.flamby})" if row.flamby_value is not None else "none"
        )
        if spread is None:
            table.add_row(row.label, "-", "-", "-", "", flamby, row.note)
            continue
        table.add_row(
            row.label, f"{spread.mean:.3f}", fmt(spread.sd), f"{spread.low:.3f}-{spread.high:.3f}",
            " ".join(f"{v:.3f}" for v in row.values), flamby, row.note,
        )  # fmt: skip
    console.print(table)
    console.print(
        "FLamby: Ogier du Terrail et al., NeurIPS 2022 Datasets and Benchmarks "
        "(arXiv:2210.04620), Fed-Heart-Disease, seeds 42-46, its own hyper-parameters; "
        "'none' = no FLamby counterpart",
        highlight=False,
    )
    sites = report.site_rows
    if sites:
        dp = sites[0].dp_global is not None
        table = Table(title="Per site, own test set: mean over seeds")
        columns = ["site", "local-only", "global", "personalized"]
        columns += ["DP global", "DP personalized"] if dp else []
        for column in columns:
            table.add_column(column, justify="left" if column == "site" else "right")
        for site in sites:
            row = [site.site, fmt(site.local), fmt(site.global_), fmt(site.personalized)]
            row += [fmt(site.dp_global), fmt(site.dp_personalized)] if dp else []
            table.add_row(*row)
        console.print(table)
    if not report.full_protocol:
        console.print(
            "[yellow]reduced run: not the full protocol (seeds 42-46, every configuration, "
            "the run config's defaults); the verdicts below are for these runs only[/]"
        )
    console.print("Goals (issue #13):")
    for goal in report.goals:
        colour = "green" if goal.met else "red"
        console.print(
            f"({goal.key}) {goal.text}: [bold {colour}]{goal.verdict}[/] - {goal.measured}",
            highlight=False,
        )


@bench_app.command("select-global")
def bench_select_global(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for every run and selection.json (default runs/select-global-<time>).",
            resolve_path=True,
        ),
    ] = None,
    seeds: Annotated[
        str, typer.Option(help="Comma-separated seeds (not the benchmark's 42-46).")
    ] = "0,1,2,3,4",
    settings: Annotated[
        str | None,
        typer.Option(help="Comma-separated subset of the settings' names (default: all 13)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show fedcare's, Flower's and Ray's logs.")
    ] = False,
) -> None:
    """Score the default settings and each one-change neighbour on VALIDATION rows only (each
    site's training rows split again; its test rows are never read) and rank them: how the
    defaults were chosen (README). 13 settings x the seeds, about 20 s a run on 2 cores."""
    quiet_environment()
    from fedcare.atomic import write_json_atomic
    from fedcare.config import RunConfig
    from fedcare.simulations import model_selection as selection

    seed_list = run_or_exit(lambda: _seeds(seeds))
    base = RunConfig()
    candidates = [selection.neighbour(c, base) for c in selection.NEIGHBOURS]
    candidates = [  # a neighbour that changes nothing is the default again
        c for c in candidates if c.name == "default" or c.config(base, 0) != base.replace(seed=0)
    ]
    if settings is not None:
        wanted = [name.strip() for name in settings.split(",")]
        run_or_exit(lambda: selection.known_names(wanted))
        candidates = [c for c in candidates if c.name in wanted]
    out_dir = out or Path("runs").resolve() / time.strftime("select-global-%Y%m%d-%H%M%S")
    configure_logging(verbose)
    started = time.perf_counter()
    console.print(
        f"fedcare bench select-global: {len(candidates)} settings x seeds {seeds} on "
        f"validation rows -> {out_dir}",
        highlight=False,
    )
    results = run_or_exit(
        lambda: selection.evaluate_candidates(
            candidates,
            out_dir,
            base,
            seed_list,
            progress=lambda text: console.print(text, highlight=False),
        )
    )
    table = Table(title="Validation accuracy, mean over sites (FLamby's metric), best first")
    for column in ("setting", "changes", "mean", "sd", "AUROC", *results[0].per_site_accuracy):
        table.add_column(column, justify="left" if column in ("setting", "changes") else "right")
    for result in results:
        changes = ", ".join(f"{k}={v}" for k, v in result.candidate.changes.items()) or "-"
        table.add_row(
            result.candidate.name, changes, f"{result.mean_accuracy:.3f}",
            f"{result.spread:.3f}", f"{result.mean_auroc:.3f}",
            *(f"{v:.3f}" for v in result.per_site_accuracy.values()),
        )  # fmt: skip
    console.print(table)
    write_json_atomic(out_dir / "selection.json", [r.to_json() for r in results])
    console.print(
        f"figures: {out_dir / 'selection.json'}; took {time.perf_counter() - started:.0f} s",
        highlight=False,
    )
