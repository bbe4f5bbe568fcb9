"""A site's privacy ledger: ``fedcare privacy ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedcare.cli.common import (
    console,
    run_or_exit,
)
from fedcare.errors import ConfigError

privacy_app = typer.Typer(help="A site's privacy ledger and spending.", no_args_is_help=True)


@privacy_app.command("report")
def privacy_report(
    state: Annotated[
        Path, typer.Option("--state", help="The site's state folder.", resolve_path=True)
    ],
    accountant: Annotated[str, typer.Option(help="rdp or prv.")] = "rdp",
    delta: Annotated[float | None, typer.Option(help="δ (default: the ledger's).")] = None,
) -> None:
    """Print a site's privacy ledger and the ε it adds up to."""
    from fedcare.config import AccountantName, parse_choice
    from fedcare.privacy.accounting import epsilon_from_events
    from fedcare.privacy.ledger import PrivacyLedger

    def read() -> tuple[Any, AccountantName]:
        if not state.is_dir():
            raise ConfigError(f"{state}: state folder not found")
        name = parse_choice(AccountantName, "--accountant", accountant)
        return PrivacyLedger(state).read(), name

    ledger = PrivacyLedger(state)
    events, name = run_or_exit(read)
    table = Table(title=f"Privacy ledger: {ledger.path}")
    for column in ("#", "run", "round", "kind", "σ", "sample rate", "steps", "δ", "clip", "time"):
        table.add_column(
            column, justify="right" if column not in ("run", "kind", "time") else "left"
        )
    for index, e in enumerate(events, 1):
        table.add_row(
            str(index), e.run_id, str(e.round), e.kind, f"{e.noise_multiplier:.4g}",
            f"{e.sample_rate:.4g}", str(e.steps), f"{e.delta:g}", f"{e.max_grad_norm:g}", e.time,
        )  # fmt: skip
    console.print(table)
    at = delta if delta is not None else max((e.delta for e in events), default=1e-5)
    spent = epsilon_from_events(events, at, name)
    runs = len({e.run_id for e in events})
    console.print(
        f"{len(events)} event(s) over {runs} run(s); cumulative ε = {spent:.4f} at δ = {at:g} "
        f"({name} accountant)"
    )
