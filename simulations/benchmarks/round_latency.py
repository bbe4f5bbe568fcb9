"""Per-round wall time of the same 3-hospital run: Flower's simulation engine, a real deployment
(SuperLink + 3 SuperNodes over TLS on loopback), and stock Flower's deployment with an empty
ClientApp. Medians over the rounds of each run; one process at a time on this machine.
"""

from __future__ import annotations

import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedcare.client.daemon import SiteDaemon
from fedcare.client.executor import fab_hash
from fedcare.client.policy import SitePolicy
from fedcare.config import RunConfig, StrategyName
from fedcare.flower_app import write_flower_app
from fedcare.privacy.pki import add_site, generate_site_key, init_federation
from fedcare.server.coordinator import Coordinator
from fedcare.simulations.scenarios import embedded_data_dir
from fedcare.simulations.simulate import simulate

SITES = ("cleveland", "hungarian", "va")
STOCK_SERVER = "fedcare.simulations.benchmarks.stock_app:server"
STOCK_CLIENT = "fedcare.simulations.benchmarks.stock_app:client"


@dataclass(frozen=True)
class LatencyRow:
    """Median seconds per round of one environment."""

    environment: str
    rounds: int
    median_round_s: float
    round_times_s: tuple[float, ...]


def _per_round(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def _row(name: str, times: list[float]) -> LatencyRow:
    per_round = _per_round(times)
    return LatencyRow(name, len(per_round), statistics.median(per_round), tuple(per_round))


def run_latency_benchmark(
    rounds: int = 3, progress: Callable[[str], None] = print
) -> list[LatencyRow]:
    """Time ``rounds`` FedAvg rounds of the 3-site heart-disease run in each environment."""
    config = RunConfig(rounds=rounds, strategy=StrategyName.FEDAVG)
    data = embedded_data_dir()
    rows: list[LatencyRow] = []
    with tempfile.TemporaryDirectory(prefix="fedcare-bench-") as tmp:
        root = Path(tmp)
        scenario = root / "scenario"
        scenario.mkdir()
        for site in SITES:
            (scenario / f"{site}.data").write_bytes((data / f"processed.{site}.data").read_bytes())
        progress("simulation (Flower simulation engine, Ray) ...")
        simulate(config.replace(scenario=str(scenario)), root / "sim")
        sim = json.loads((root / "sim" / "rounds.json").read_text())
        rows.append(_row("fedcare in simulation", [r["finished_at"] for r in sim]))

        coord = Coordinator(root / "coordinator")
        init_federation(coord.root, ["127.0.0.1", "localhost"])
        daemons = []
        try:
            keys = {site: generate_site_key(root / "sites" / site, site) for site in SITES}
            for site in SITES:  # each site made its key pair; the owner registers the public key
                add_site(coord.root, site, keys[site].public_key)
            progress("deployment: starting SuperLink and 3 SuperNodes over TLS ...")
            stock = coord.new_run_folder()
            run_config = {"rounds": rounds, "min-sites": len(SITES), "out-dir": str(stock)}
            stock_app = write_flower_app(stock / "app", run_config, STOCK_SERVER, STOCK_CLIENT)
            approved = (fab_hash(stock_app),)  # both hosts approve the stock bundle for this test
            address = coord.start(approved_apps=approved)
            for site in SITES:
                daemon = SiteDaemon(root / "sites" / site)
                daemon.start(
                    site, data / f"processed.{site}.data", keys[site].private_key,
                    coord.root / "ca.crt", address, SitePolicy(require_dp=False),
                    approved_apps=approved,
                )  # fmt: skip
                daemons.append(daemon)
            progress("deployment: fedcare run ...")
            out = coord.submit(config, min_sites=len(SITES))
            records = coord.follow(out, rounds, lambda r: progress(f"  round {r['round']}"), 1800)
            rows.append(
                _row("fedcare deployed (3 SuperNodes, TLS)", [r["finished_at"] for r in records])
            )
            progress("deployment: stock Flower app (FedAvg, empty ClientApp) ...")
            coord.submit_app(stock_app)
            times = _wait_for_stock(stock, rounds)
            rows.append(_row("stock Flower deployed (same SuperNodes)", times))
        finally:
            for daemon in daemons:
                daemon.stop()
            coord.stop()
    return rows


def _wait_for_stock(out: Path, rounds: int, timeout_s: float = 600) -> list[float]:
    deadline = time.monotonic() + timeout_s
    path = out / "stock_rounds.json"
    while time.monotonic() < deadline:
        if path.exists():
            times: list[float] = json.loads(path.read_text())["times"]
            if len(times) >= rounds + 1:
                return times
        time.sleep(0.5)
    raise TimeoutError(f"stock Flower run did not finish in {timeout_s:.0f} s")
