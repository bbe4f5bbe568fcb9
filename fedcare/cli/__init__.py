"""The ``fedcare`` command line: one module per command group (as Flower's ``flwr/cli/``).

Handlers live here; the work lives in the packages. Every fedcare error becomes one line on
stderr (``error: ...``) and its documented exit code (:mod:`fedcare.cli.common`).
"""

from __future__ import annotations

import sys

import typer

from fedcare.cli.bench import bench_app
from fedcare.cli.coordinator import coordinator_app
from fedcare.cli.pki import pki_app
from fedcare.cli.privacy import privacy_app
from fedcare.cli.registry import registry_app
from fedcare.cli.serve import serve_app
from fedcare.cli.simulate import simulate
from fedcare.cli.site import site_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedcare",
    help="Federated learning across hospitals, on Flower, PyTorch and Opacus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(simulate)
app.add_typer(privacy_app, name="privacy")
app.add_typer(site_app, name="site")
app.add_typer(pki_app, name="pki")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(bench_app, name="bench")
app.add_typer(serve_app, name="serve")
app.add_typer(registry_app, name="registry")


@app.callback()
def _root() -> None:
    """Federated learning across hospitals, on Flower, PyTorch and Opacus."""


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)
