"""What every ``fedcare`` command group shares: consoles, the error-to-exit-code rule, quiet
offline settings for Flower and Ray, and options used by more than one group.

Every fedcare error becomes one line on stderr (``error: ...``) and its documented exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fedcare.errors import ConfigError, ExitCode, FedcareError

console = Console(width=None if sys.stdout.isatty() else 120, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

SecureAggregationOption = Annotated[
    bool | None,
    typer.Option(
        "--secure-aggregation/--no-secure-aggregation",
        help="SecAgg+: the coordinator learns only the sum of the sites' updates.",
    ),
]
InitialModelOption = Annotated[
    Path | None,
    typer.Option(
        help="Start from these weights (e.g. a registry version's); the registry then "
        "names that version as the new one's parent.",
        resolve_path=True,
    ),
]
BundleOption = Annotated[
    Path, typer.Option("--bundle", help="The release bundle folder.", resolve_path=True)
]
ReleaseKeyOption = Annotated[
    Path, typer.Option("--key", help="The model owner's owner-release.pub.", resolve_path=True)
]


def quiet_environment() -> None:
    """No network here and no telemetry from a clinical tool."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def configure_logging(verbose: bool) -> None:
    """fedcare's own logs to stderr; Flower's console handler only warns unless verbose."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    from flwr.supercore.logger import update_console_handler

    logging.getLogger("flwr").propagate = False
    update_console_handler(level=logging.DEBUG if verbose else logging.WARNING)


def run_or_exit(action: Callable[[], T]) -> T:
    try:
        return action()
    except FedcareError as exc:
        refuse(exc)


def refuse(exc: FedcareError) -> NoReturn:
    """One line on stderr (``error: ...``) and ``exc``'s documented exit code."""
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=int(exc.exit_code))


def end_of_run(
    records: Sequence[Mapping[str, Any]], state_of: Callable[[str], str] | None = None
) -> None:
    """After a run: exit with ExitCode.NO_TRAINING and one line per site if no site trained in
    any round; else name each site that trained in no round (the run itself succeeded)."""
    from fedcare.run_outcome import STATE, run_outcome

    outcome = run_outcome(records)
    lines = outcome.lines(state_of or (lambda _: STATE))
    if outcome.nothing_trained:
        err_console.print(
            f"[bold red]error:[/] no site trained in any of the {outcome.rounds} round(s); "
            "the model is still the initial one",
            highlight=False,
            soft_wrap=True,
        )
        for line in lines:
            err_console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=int(ExitCode.NO_TRAINING))
    for line in lines:
        console.print(f"[yellow]did not train: {escape(line)}[/]", highlight=False)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def refuse_options_with_resume(options: dict[str, object]) -> None:
    """``--resume`` continues a run with the settings it started with: refuse (one line, exit
    2) any run option also given, named as on the command line."""
    given = [f"--{name.replace('_', '-')}" for name, value in options.items() if value is not None]
    if given:
        refuse(
            ConfigError(
                f"--resume continues a run with its own settings; drop {', '.join(given)} "
                "(or start a new run)"
            )
        )
