"""The run-config keys the coordinator sets per run (core: the site side hashes the same App).

``fedcare coordinator start/run/status`` write and read these; importing them from
``fedcare.server.app`` would load Flower's ServerApp, torch and the strategies for every such
command.
"""

from __future__ import annotations

OUT_DIR_KEY = "out-dir"
MIN_SITES_KEY = "min-sites"
SIM_SITES_KEY = "sim-sites"  # read by simulated ClientApps only
REGISTRY_KEY = "site-registry"  # the coordinator's sites.json; "" in a simulation
RUNTIME_KEYS = frozenset({OUT_DIR_KEY, MIN_SITES_KEY, SIM_SITES_KEY, REGISTRY_KEY})
ROUNDS_FILE = "rounds.json"


def default_runtime_config() -> dict[str, str | int]:
    """Runtime keys' defaults in the Flower App; each run overrides them (``--run-config``)."""
    return {OUT_DIR_KEY: "fedcare-out", MIN_SITES_KEY: 2, REGISTRY_KEY: ""}
