"""What every ``fedcare`` command group shares: consoles, the error-to-exit-code rule, quiet
offline settings for Flower and Ray, and options used by more than one group.

Every fedcare error becomes one line on stderr (``error: ...``) and its documented exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from fedcare.errors import FedcareError

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
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=int(exc.exit_code)) from None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
