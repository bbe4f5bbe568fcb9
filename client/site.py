"""Which site this ClientApp serves, where its records and state live, and its policy.

Deployment: the site daemon passes ``site-name``, ``data-path``, ``state-dir`` and the policy
keys (``max-epsilon``, ``delta``, ``require-dp``, ``require-secure-aggregation``) as node config,
and ``site-key``, the site key's path, with which every reply's ledger head is signed; the data
path is read only here, at the site. Simulation: Flower gives each virtual SuperNode a
``partition-id``, which indexes the scenario's site table in the run config (``sim-sites``, same
keys; no site key: a simulation has no authentication, so its replies carry no signed head).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context

from fedcare.client.policy import SitePolicy
from fedcare.errors import ConfigError
from fedcare.feature_stats import FeatureStats
from fedcare.tasks import SiteData, get_task

SITE_NAME_KEY = "site-name"
DATA_PATH_KEY = "data-path"
STATE_DIR_KEY = "state-dir"
PARTITION_ID_KEY = "partition-id"
SIM_SITES_KEY = "sim-sites"
SITE_KEY_KEY = "site-key"


@dataclass(frozen=True)
class SiteIdentity:
    """A site's name, the local path of its data, its state folder and its policy."""

    name: str
    data_path: Path
    state_dir: Path
    policy: SitePolicy
    key_path: Path | None = None  # signs the ledger head of every reply (deployment only)

    def to_node_config(self) -> dict[str, float | str]:
        """The node config a SuperNode (or a simulated one) passes to the ClientApp."""
        key = {SITE_KEY_KEY: str(self.key_path.resolve())} if self.key_path else {}
        return (
            {
                SITE_NAME_KEY: self.name,
                DATA_PATH_KEY: str(self.data_path.resolve()),
                STATE_DIR_KEY: str(self.state_dir.resolve()),
            }
            | key
            | self.policy.to_mapping()
        )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SiteIdentity:
        name = str(values[SITE_NAME_KEY])
        data_path = Path(str(values[DATA_PATH_KEY]))
        state_dir = Path(str(values.get(STATE_DIR_KEY) or data_path.parent / f".fedcare-{name}"))
        key = values.get(SITE_KEY_KEY)
        key_path = Path(str(key)) if key else None
        return cls(name, data_path, state_dir, SitePolicy.from_mapping(values), key_path)


def resolve_site(context: Context) -> SiteIdentity:
    """The site this node serves (see module docstring)."""
    node = dict(context.node_config)
    if SITE_NAME_KEY in node and DATA_PATH_KEY in node:
        return SiteIdentity.from_mapping(node)
    if PARTITION_ID_KEY in node and SIM_SITES_KEY in context.run_config:
        table = json.loads(str(context.run_config[SIM_SITES_KEY]))
        return SiteIdentity.from_mapping(table[int(node[PARTITION_ID_KEY])])
    raise ConfigError(
        f"node config must set '{SITE_NAME_KEY}' and '{DATA_PATH_KEY}' "
        "(e.g. fedcare site --name NAME --data FILE)"
    )


@lru_cache(maxsize=8)
def load_site_data(
    task_name: str, site: SiteIdentity, stats: FeatureStats | None = None
) -> SiteData:
    """The site's preprocessed split, read and checked from its file at each call.

    ``stats``: the federation's statistics (a run with ``preprocessing = "federation"``):
    the same split, standardised with them instead of the site's own training statistics.
    """
    task = get_task(task_name)
    ignore = site.policy.ignore_columns
    if stats is None:
        return task.load_site(site.name, site.data_path, ignore_columns=ignore)
    train, test = task.split_labelled(site.name, site.data_path, ignore)
    return SiteData(
        site=site.name,
        x_train=stats.standardise(task.encode(train.columns)),
        y_train=train.labels.astype(np.float32),
        x_test=stats.standardise(task.encode(test.columns)),
        y_test=test.labels.astype(np.float32),
        feature_names=tuple(task.feature_names),
    )
