"""Shared fixtures: the embedded four-hospital data and quiet, offline Flower settings.

Order and seeds: pytest-randomly (on in ``make test``: ``-p randomly`` in pyproject.toml)
shuffles modules and the tests within each, and reseeds ``random`` and numpy before every test
from ``--randomly-seed`` (printed in the header: rerun with it to reproduce an order); torch's
global generator is reseeded here from the same seed. DP-SGD's noise and Poisson sampling are
seeded from OS entropy by design (``fedcare.privacy.dp_sgd``) and cannot be seeded from here
(in the simulation they run in Ray's worker processes): a test whose assertion depends on them
must state its false-failure probability.

Parallel runs (``make test``: pytest-xdist, ``--dist loadfile``): each test file goes to one
worker, so a module-scoped fixture (a running federation, a finished simulation, a built wheel)
is built once. Not ``loadgroup``: with pytest 9.2, xdist 3.8's group suffix on node ids has no
effect (pytest keeps node ids in ``Node._id``), so groups were split across workers.
"""

from __future__ import annotations

import locale
import os
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import Phase, settings

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

SITES = ("cleveland", "hungarian", "switzerland", "va")

# Under mutmut (`make mutate`) a failing property test only has to fail: Hypothesis' shrinking of
# the failing example (minutes, for a mutant that breaks every example) is for a person reading
# the failure, and it made mutmut's CPU limit end such mutants as timeouts. The property tests'
# own settings() inherit this profile's phases (they are built after conftest is imported).
settings.register_profile(
    "mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None
)
if "mutmut" in sys.modules:
    settings.load_profile("mutation")


@pytest.fixture(autouse=True)
def _seeded_torch(request: pytest.FixtureRequest) -> None:
    """torch's global generator, reseeded per test from the run's seed (as pytest-randomly
    does for ``random`` and numpy), so a test that draws from it is reproducible."""
    import torch

    seed = request.config.getoption("randomly_seed", default=None)
    base = seed if isinstance(seed, int) else 0
    torch.manual_seed((base + zlib.crc32(request.node.nodeid.encode())) % 2**32)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from fedcare.simulations.scenarios import embedded_data_dir

    return embedded_data_dir()


@pytest.fixture(scope="session")
def site_paths(data_dir: Path) -> dict[str, Path]:
    return {site: data_dir / f"processed.{site}.data" for site in SITES}


@pytest.fixture
def ascii_locale() -> Iterator[None]:
    """The process runs under the C locale, whose default text encoding is ASCII (a minimal
    server image): a file read without an explicit encoding would then fail on UTF-8 text."""
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, before)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked ``slow`` first, each group still in pytest-randomly's order.

    With ``--dist loadfile`` xdist hands out whole modules in collection order, so a long
    end-to-end module drawn last by the shuffle would run alone at the end while the other
    workers sit idle. Runs after pytest-randomly's shuffle (trylast) and sorts stably, so the
    order inside each group, and of the tests in each module, stays random.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
