"""The federation's PKI: ``fedcare pki ...`` (run by the model owner)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedcare.cli.common import (
    console,
    err_console,
    run_or_exit,
)

pki_app = typer.Typer(
    help="The federation's CA, TLS certificate and site registrations.", no_args_is_help=True
)


@pki_app.command("init")
def pki_init(
    folder: Annotated[Path, typer.Option("--dir", help="Coordinator folder.", resolve_path=True)],
    host: Annotated[
        list[str] | None,
        typer.Option(help="Host name or IP sites connect to (repeat); loopback is always added."),
    ] = None,
    ca_key_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the CA private key (default DIR/offline-ca).",
            resolve_path=True,
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace existing keys.")] = False,
) -> None:
    """Create the federation's CA and the coordinator's TLS certificate."""
    from fedcare.privacy.pki import init_federation

    made = run_or_exit(
        lambda: init_federation(folder, host or ["localhost", "127.0.0.1"], force, ca_key_dir)
    )
    console.print(
        f"created {made.ca_cert}, {made.server_cert} and {made.server_key} (0600); "
        f"give {made.ca_cert} to every site"
    )
    err_console.print(
        f"CA private key: {made.ca_key} (0600). Move it offline now (e.g. to an encrypted USB "
        "stick): the coordinator does not need it to run.",
        highlight=False,
        soft_wrap=True,
    )


@pki_app.command("add-site")
def pki_add_site(
    name: Annotated[str, typer.Argument(help="Site name.")],
    folder: Annotated[Path, typer.Option("--dir", help="Coordinator folder.", resolve_path=True)],
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="The site.pub the site sent you (from 'fedcare site keygen').",
            resolve_path=True,
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing registration.")] = False,
) -> None:
    """Register a site's public key (made at the site) with the coordinator."""
    from fedcare.errors import ConfigError
    from fedcare.privacy.pki import add_site

    def register() -> Path:
        if public_key is None:
            raise ConfigError(
                f"pki add-site {name}: --public-key FILE is required; the site creates its key "
                "pair with 'fedcare site keygen --state STATE' and sends you its site.pub"
            )
        registered: Path = add_site(folder, name, public_key, force)
        return registered

    registered = run_or_exit(register)
    console.print(
        f"site {name}: public key registered as {registered} (a running coordinator: "
        f"'fedcare coordinator register --dir {folder}'); give the site {folder / 'ca.crt'}"
    )


@pki_app.command("release-key")
def pki_release_key(
    folder: Annotated[
        Path, typer.Option("--dir", help="Folder for the owner's release key.", resolve_path=True)
    ],
    force: Annotated[bool, typer.Option(help="Replace an existing key.")] = False,
) -> None:
    """Create the model owner's release signing key (EC P-384): signs released bundles."""
    from fedcare.privacy.pki import generate_release_key

    made = run_or_exit(lambda: generate_release_key(folder, force))
    console.print(
        f"created {made.private_key} (0600) and {made.public_key}; keep the private key with "
        f"the model owner only, give {made.public_key} to every hospital that verifies or "
        "serves a release",
        highlight=False,
        soft_wrap=True,
    )


@pki_app.command("serving-cert")
def pki_serving_cert(
    folder: Annotated[
        Path, typer.Option("--dir", help="Coordinator folder (holds ca.crt).", resolve_path=True)
    ],
    ca_key: Annotated[
        Path, typer.Option(help="The CA private key (from offline storage).", resolve_path=True)
    ],
    host: Annotated[
        list[str] | None,
        typer.Option(help="Host name or IP API clients connect to (repeat); loopback is added."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing certificate.")] = False,
) -> None:
    """Issue a TLS certificate for 'fedcare serve' from the federation's CA."""
    from fedcare.privacy.pki import issue_serving_cert

    cert, key = run_or_exit(
        lambda: issue_serving_cert(folder, ca_key, host or ["localhost"], force)
    )
    console.print(
        f"created {cert} and {key} (0600); serve with 'fedcare serve BUNDLE --tls-cert {cert} "
        f"--tls-key {key} ...'; clients verify it with {folder / 'ca.crt'}",
        highlight=False,
        soft_wrap=True,
    )
