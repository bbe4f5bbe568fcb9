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
HOLDOUT_KEY = "holdout"
HOLDOUT_TEST = "test"
HOLDOUT_VALIDATION = "validation"
# A validation holdout is this share of the site's training rows, split with a fixed seed so
# every simulated setting is scored on the same rows (fedcare.simulations.model_selection).
VALIDATION_HOLDOUT_FRACTION = 1.0 - 0.66
VALIDATION_HOLDOUT_SEED = 43


@dataclass(frozen=True)
class SiteIdentity:
    """A site's name, the local path of its data, its state folder and its policy."""

    name: str
    data_path: Path
    state_dir: Path
    policy: SitePolicy
    key_path: Path | None = None  # signs the ledger head of every reply (deployment only)
    # "validation": the site trains on part of its training rows and is scored on the rest;
    # its test rows are not used (choosing settings without reading them; simulation only)
    holdout: str = HOLDOUT_TEST

    def __post_init__(self) -> None:
        if self.holdout not in (HOLDOUT_TEST, HOLDOUT_VALIDATION):
            raise ConfigError(
                f"site {self.name!r}: {HOLDOUT_KEY} must be {HOLDOUT_TEST!r} or "
                f"{HOLDOUT_VALIDATION!r}, got {self.holdout!r}"
            )

    def to_node_config(self) -> dict[str, float | str]:
        """The node config a SuperNode (or a simulated one) passes to the ClientApp."""
        key = {SITE_KEY_KEY: str(self.key_path.resolve())} if self.key_path else {}
        if self.holdout != HOLDOUT_TEST:
            key[HOLDOUT_KEY] = self.holdout
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
        holdout = str(values.get(HOLDOUT_KEY, HOLDOUT_TEST))
        return cls(name, data_path, state_dir, SitePolicy.from_mapping(values), key_path, holdout)


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
    data = _load_split(task_name, site, stats)
    return validation_holdout(data) if site.holdout == HOLDOUT_VALIDATION else data


def validation_holdout(data: SiteData) -> SiteData:
    """The site's training rows split into a training part and a validation part that takes
    the place of its test rows (which are dropped unread by anything after this)."""
    from fedcare.personalization import split_validation

    fit, validation = split_validation(
        data.y_train, VALIDATION_HOLDOUT_FRACTION, VALIDATION_HOLDOUT_SEED
    )
    return SiteData(
        site=data.site,
        x_train=data.x_train[fit],
        y_train=data.y_train[fit],
        x_test=data.x_train[validation],
        y_test=data.y_train[validation],
        feature_names=data.feature_names,
    )


def _load_split(task_name: str, site: SiteIdentity, stats: FeatureStats | None) -> SiteData:
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
