"""Which site this ClientApp serves and where its records are, from Flower's node config.

Deployment: the site daemon passes ``site-name`` and ``data-path`` as node config; the path is
read only here, at the site. Simulation: Flower gives each virtual SuperNode a
``partition-id``, which indexes the scenario's site table in the run config (``sim-sites``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from flwr.app import Context

from fedcare.errors import ConfigError
from fedcare.tasks import SiteData, get_task

SITE_NAME_KEY = "site-name"
DATA_PATH_KEY = "data-path"
PARTITION_ID_KEY = "partition-id"
SIM_SITES_KEY = "sim-sites"


@dataclass(frozen=True)
class SiteIdentity:
    """A site's name and the local path of its data file."""

    name: str
    data_path: Path


def resolve_site(context: Context) -> SiteIdentity:
    """The site this node serves (see module docstring)."""
    node = context.node_config
    if SITE_NAME_KEY in node and DATA_PATH_KEY in node:
        return SiteIdentity(name=str(node[SITE_NAME_KEY]), data_path=Path(str(node[DATA_PATH_KEY])))
    if PARTITION_ID_KEY in node and SIM_SITES_KEY in context.run_config:
        table = json.loads(str(context.run_config[SIM_SITES_KEY]))
        entry = table[int(node[PARTITION_ID_KEY])]
        return SiteIdentity(name=str(entry["name"]), data_path=Path(str(entry["path"])))
    raise ConfigError(
        f"node config must set '{SITE_NAME_KEY}' and '{DATA_PATH_KEY}' "
        "(e.g. fedcare site --name NAME --data FILE)"
    )


@lru_cache(maxsize=8)
def load_site_data(task_name: str, site: SiteIdentity) -> SiteData:
    """The site's preprocessed split, loaded once per process (Ray actors live across rounds)."""
    return get_task(task_name).load_site(site.name, site.data_path)
