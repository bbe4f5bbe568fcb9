"""``fedcare serve BUNDLE``: a signed release behind the Open Inference Protocol (gRPC + REST).

``fedcare serve BUNDLE ...`` is short for ``fedcare serve start BUNDLE ...``; ``add-key`` and
``remove-key`` manage the API keys file.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from fedcare.cli.common import console, err_console, run_or_exit


class _StartByDefault(TyperGroup):
    """``fedcare serve BUNDLE`` runs ``start``: a first argument that is not a subcommand (or
    an option such as --help) is the bundle."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


serve_app = typer.Typer(
    cls=_StartByDefault,
    help="Serve a signed release over the Open Inference Protocol (KServe v2), gRPC and REST.",
    no_args_is_help=True,
)

KeysOption = Annotated[
    Path,
    typer.Option("--keys", "--api-keys", help="API keys file (hashes only).", resolve_path=True),
]


@serve_app.command("start")
def serve_start(
    bundle: Annotated[Path, typer.Argument(help="The release bundle folder.", resolve_path=True)],
    key: Annotated[
        Path,
        typer.Option(help="The owner's release public key (owner-release.pub).", resolve_path=True),
    ],
    keys: KeysOption,
    tls_cert: Annotated[
        Path,
        typer.Option(
            help="TLS certificate (PEM), e.g. from 'fedcare pki serving-cert'.", resolve_path=True
        ),
    ],
    tls_key: Annotated[Path, typer.Option(help="TLS private key (PEM).", resolve_path=True)],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0: any free port).")] = 8081,
    http_port: Annotated[int, typer.Option(help="REST port (0: any free port).")] = 8080,
    max_batch: Annotated[int, typer.Option(help="Most rows one request may hold.")] = 1024,
    access_log: Annotated[
        Path | None,
        typer.Option(help="Append the access log here (default: stderr).", resolve_path=True),
    ] = None,
) -> None:
    """Verify BUNDLE with --key and serve it until interrupted; refuses a bad signature."""
    import torch

    from fedcare.server.serving.server import prepare

    _configure_access_log(access_log)
    torch.set_num_threads(1)  # a tiny model: threads cost more than they give per request
    serving = run_or_exit(
        lambda: prepare(bundle, key, keys, tls_cert, tls_key, host, grpc_port, http_port, max_batch)
    )
    model = serving.state.model
    lines = [
        f"serving {model.name} version {model.version} ({model.task}, {model.model_name}) "
        f"from {bundle}, signature verified with {key}",
        f"grpc  {serving.grpc_address}  (TLS; inference.GRPCInferenceService)",
        f"rest  {serving.rest_url}/v2/models/{model.name}  (TLS)",
        f"api keys: {len(serving.state.keys.hashes)} in {keys}; access log: "
        f"{access_log or 'stderr'}; max batch {max_batch}",
    ]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    sys.stdout.flush()
    serving.serve_forever()


@serve_app.command("add-key")
def serve_add_key(
    keys: KeysOption,
    name: Annotated[str, typer.Option(help="Who the key is for (shown in the access log).")],
) -> None:
    """Make a new API key; prints its token once (only its hash is stored)."""
    from fedcare.server.serving.keys import add_key

    token = run_or_exit(lambda: add_key(keys, name))
    print(token)
    err_console.print(
        f"key {name!r} added to {keys}; the token above is shown only now: give it to "
        f"{name} (header 'Authorization: Bearer TOKEN')",
        highlight=False,
        soft_wrap=True,
    )


@serve_app.command("remove-key")
def serve_remove_key(
    keys: KeysOption,
    name: Annotated[str, typer.Option(help="The key to revoke.")],
) -> None:
    """Revoke an API key (restart the server to apply)."""
    from fedcare.server.serving.keys import remove_key

    run_or_exit(lambda: remove_key(keys, name))
    console.print(f"key {name!r} removed from {keys}; restart 'fedcare serve' to apply")


def _configure_access_log(path: Path | None) -> None:
    handler: Any = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("fedcare.serve.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
