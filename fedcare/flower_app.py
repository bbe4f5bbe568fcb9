"""A Flower App folder for fedcare: components plus the run's config as its defaults.

Used by simulation (as ``flwr-simulation`` delivers run config) and by the coordinator (the
folder ``flwr run`` packs into a FAB). The FAB carries only this ``pyproject.toml``: the code it
names is the fedcare package each party installed itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedcare.atomic import write_bytes_atomic

SERVER_APP_REF = "fedcare.server.app:app"
CLIENT_APP_REF = "fedcare.client.app:app"


def write_flower_app(
    folder: Path,
    run_config: dict[str, Any],
    serverapp: str = SERVER_APP_REF,
    clientapp: str = CLIENT_APP_REF,
) -> Path:
    """Write ``folder/pyproject.toml`` whose ``[tool.flwr.app.config]`` is ``run_config``."""
    lines = [
        "[project]",
        'name = "fedcare-run"',
        'version = "1.0.0"',
        "",
        "[tool.flwr.app]",
        'publisher = "fedcare"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{serverapp}"',
        f'clientapp = "{clientapp}"',
        "",
        "[tool.flwr.app.config]",
        *(f"{json.dumps(key)} = {json.dumps(value)}" for key, value in sorted(run_config.items())),
    ]
    write_bytes_atomic(folder / "pyproject.toml", ("\n".join(lines) + "\n").encode("utf-8"))
    return folder
