"""Shared fixtures: the embedded four-hospital data and quiet, offline Flower settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

SITES = ("cleveland", "hungarian", "switzerland", "va")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from fedcare.simulations.scenarios import embedded_data_dir

    return embedded_data_dir()


@pytest.fixture(scope="session")
def site_paths(data_dir: Path) -> dict[str, Path]:
    return {site: data_dir / f"processed.{site}.data" for site in SITES}
