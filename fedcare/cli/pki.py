"""The federation's PKI: ``fedcare pki ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedcare.cli.common import (
    console,
    run_or_exit,
)

pki_app = typer.Typer(
    help="The federation's CA, TLS certificate and site keys.", no_args_is_help=True
)


@pki_app.command("init")
def pki_init(
    folder: Annotated[Path, typer.Option("--dir", help="Coordinator folder.")],
    host: Annotated[
        list[str] | None, typer.Option(help="Host name or IP sites connect to (repeat).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace existing keys.")] = False,
) -> None:
    """Create the federation's CA and the coordinator's TLS certificate."""
    from fedcare.privacy.pki import init_federation

    written = run_or_exit(
        lambda: init_federation(folder, host or ["localhost", "127.0.0.1"], force)
    )
    console.print("created " + ", ".join(str(p) for p in written) + " (private keys 0600)")


@pki_app.command("add-site")
def pki_add_site(
    name: Annotated[str, typer.Argument(help="Site name.")],
    folder: Annotated[Path, typer.Option("--dir", help="Coordinator folder.")],
    force: Annotated[bool, typer.Option(help="Replace an existing key.")] = False,
) -> None:
    """Create a site's key pair and register its public key with the coordinator."""
    from fedcare.privacy.pki import add_site

    keys = run_or_exit(lambda: add_site(folder, name, force))
    console.print(
        f"site {name}: give {keys.private_key} and {folder / 'ca.crt'} to the site; public key "
        f"{keys.public_key} is registered (a running coordinator: 'coordinator register')"
    )
