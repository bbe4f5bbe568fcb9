"""The model owner's coordinator: ``fedcare coordinator ...``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fedcare.cli.common import (
    InitialModelOption,
    SecureAggregationOption,
    console,
    end_of_run,
    quiet_environment,
    refuse,
    refuse_options_with_resume,
    run_or_exit,
)

coordinator_app = typer.Typer(
    help="The model owner's coordinator (Flower SuperLink).", no_args_is_help=True
)


@coordinator_app.command("start")
def coordinator_start(
    folder: Annotated[
        Path, typer.Option("--dir", help="Coordinator folder (from pki init).", resolve_path=True)
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
    approve_app: Annotated[
        list[str] | None,
        typer.Option(
            help="Also run this ServerApp bundle (FAB sha256); fedcare's own is always approved."
        ),
    ] = None,
) -> None:
    """Start the SuperLink with TLS and site authentication; register every site."""
    quiet_environment()
    from fedcare.server.coordinator import Coordinator

    approved = tuple(approve_app or ())
    address = run_or_exit(lambda: Coordinator(folder).start(host, port, approved))
    console.print(
        f"coordinator listening on {address} (TLS, site authentication, Fleet API only; "
        "the SuperLink itself is on loopback)"
    )


@coordinator_app.command("register")
def coordinator_register(folder: Annotated[Path, typer.Option("--dir", resolve_path=True)]) -> None:
    """Register sites added with 'pki add-site' since the coordinator started."""
    from fedcare.server.coordinator import Coordinator

    nodes = run_or_exit(lambda: Coordinator(folder).register_sites())
    console.print(f"registered sites: {', '.join(sorted(nodes)) or 'none'}")


@coordinator_app.command("run")
def coordinator_run(
    folder: Annotated[Path, typer.Option("--dir", resolve_path=True)],
    min_sites: Annotated[int | None, typer.Option(help="Sites every round waits for.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML run config.", resolve_path=True)
    ] = None,
    rounds: Annotated[int | None, typer.Option()] = None,
    strategy: Annotated[str | None, typer.Option()] = None,
    dp: Annotated[bool | None, typer.Option("--dp/--no-dp")] = None,
    target_epsilon: Annotated[float | None, typer.Option()] = None,
    secure_aggregation: SecureAggregationOption = None,
    preprocessing: Annotated[
        str | None,
        typer.Option(help="federation (default: noised, on each ledger) or site (own statistics)."),
    ] = None,
    initial_model: InitialModelOption = None,
    round_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a round waits for the sites' replies before it goes on with those "
            "that came (default 600); a silent site is recorded as missing."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue this run folder (runs/<time>) from its last complete round, as a "
            "new Flower run with the run's own settings.",
            resolve_path=True,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to follow the run.")] = 3600.0,
) -> None:
    """Submit a fedcare run to the federation and follow it round by round."""
    quiet_environment()
    from fedcare.errors import ConfigError
    from fedcare.runtime_keys import ROUND_TIMEOUT_KEY
    from fedcare.server.coordinator import Coordinator

    coordinator = Coordinator(folder)
    started = time.perf_counter()
    timing = {ROUND_TIMEOUT_KEY: round_timeout} if round_timeout is not None else {}
    if resume is not None:
        refuse_options_with_resume(
            {
                "min_sites": min_sites, "config": config, "rounds": rounds, "strategy": strategy,
                "dp": dp, "target_epsilon": target_epsilon,
                "secure_aggregation": secure_aggregation, "preprocessing": preprocessing,
                "initial_model": initial_model,
            }
        )  # fmt: skip
        from fedcare.config import RunConfig
        from fedcare.run_record import RunRecord

        record = run_or_exit(lambda: RunRecord.read(resume))
        run_config = RunConfig.from_run_config(record.config)
        out = run_or_exit(lambda: coordinator.resume(resume, timing))
        console.print(f"run resumed -> {out}")
    else:
        if min_sites is None:
            refuse(ConfigError("--min-sites is required (the sites every round waits for)"))
        run_config, out = _submit(
            coordinator, min_sites, config, rounds, strategy, dp, target_epsilon,
            secure_aggregation, preprocessing, initial_model, timing,
        )  # fmt: skip
    _follow(coordinator, out, run_config, started, timeout)


def _submit(
    coordinator: Any, min_sites: int, config: Path | None, rounds: int | None,
    strategy: str | None, dp: bool | None, target_epsilon: float | None,
    secure_aggregation: bool | None, preprocessing: str | None, initial_model: Path | None,
    timing: dict[str, Any],
) -> tuple[Any, Path]:  # fmt: skip
    """A new run: its config from the file and options; submitted; its run folder."""
    from fedcare.config import load_config

    run_config = run_or_exit(
        lambda: load_config(config).replace(
            rounds=rounds, strategy=strategy, dp=dp, target_epsilon=target_epsilon,
            secure_aggregation=secure_aggregation, preprocessing=preprocessing,
        )
    )  # fmt: skip
    from fedcare.runtime_keys import INITIAL_MODEL_KEY

    if initial_model is not None and not initial_model.is_file():
        from fedcare.errors import ConfigError

        refuse(ConfigError(f"--initial-model {initial_model}: no such weights file"))
    runtime = {INITIAL_MODEL_KEY: str(initial_model)} if initial_model else {}
    out = run_or_exit(lambda: coordinator.submit(run_config, min_sites, runtime | timing))
    console.print(f"run submitted -> {out}")
    return run_config, out


def _follow(coordinator: Any, out: Path, run_config: Any, started: float, timeout: float) -> None:
    """Print each round as the run writes it, until the last."""

    def show(record: dict[str, Any]) -> None:
        sites = " ".join(f"{n[:5]} {s['accuracy']:.3f}" for n, s in record["sites"].items())
        mean = record["mean_accuracy"]  # null when no site's evaluation was accepted
        console.print(
            f"round {record['round']:>3}/{run_config.rounds}  "
            f"mean {'n/a' if mean is None else format(mean, '.3f')} | {sites}  "
            f"({time.perf_counter() - started:.0f} s)"
        )
        for site, reason in record.get("refused", {}).items():
            console.print(f"[yellow]  {site} sent no update: {reason}[/]")
        for site, reason in record.get("rejected", {}).items():
            console.print(f"[yellow]  {site}'s update rejected: {reason}[/]")
        for site, reason in record.get("missing", {}).items():
            if reason == "timeout":
                console.print(f"[yellow]  {site} sent no reply within the round's timeout[/]")

    records = run_or_exit(lambda: coordinator.follow(out, run_config.rounds, show, timeout))
    end_of_run(records)  # no site trained in any round: one line per site, exit 5
    console.print(f"run finished: {out}")


@coordinator_app.command("status")
def coordinator_status(folder: Annotated[Path, typer.Option("--dir", resolve_path=True)]) -> None:
    """Which sites are connected, and the latest run's round."""
    from fedcare.server.coordinator import Coordinator

    status = run_or_exit(lambda: Coordinator(folder).status())
    console.print(
        f"coordinator {status['address']}; run {status['run']} at round {status['round']}"
    )
    for site, state in sorted(status["sites"].items()):
        console.print(f"  {site}: {state}")


@coordinator_app.command("stop")
def coordinator_stop(folder: Annotated[Path, typer.Option("--dir", resolve_path=True)]) -> None:
    """Stop the SuperLink and its helper processes."""
    from fedcare.server.coordinator import Coordinator

    Coordinator(folder).stop()
    console.print("coordinator stopped")
