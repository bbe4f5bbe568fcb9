"""Seconds per round of a 3-hospital FedAvg run (Cleveland, Hungary, VA), each environment
measured in the same benchmark run, one after the other, against stock Flower's default
deployment as the reference. A round is train + federated evaluation at every site. Rows:

* ``fedcare in simulation``: fedcare's ServerApp and ClientApp in Flower's simulation engine
  (Ray), in-process; no network, no TLS.
* ``fedcare deployed (3 SuperNodes, TLS)``: fedcare's own deployment on loopback, the
  coordinator (:class:`fedcare.server.coordinator.Coordinator`: SuperLink with TLS and SuperNode
  authentication behind its front door, ServerApps through its executor) and three site daemons
  (:class:`fedcare.client.daemon.SiteDaemon`: SuperNode with ``--isolation process`` and
  fedcare's site executor), site keys registered; plain FedAvg, fedcare's model.
* ``fedcare deployed with SecAgg+``: the same federation, the same run with
  ``secure-aggregation = true`` (Flower's SecAgg+ protocol at fedcare's defaults: with 3 sites,
  3 shares and threshold 2, so one site may drop out). Left out with ``secagg=False``.
* ``stock Flower default deployment (reference)``: Flower's own commands with Flower's defaults
  (:mod:`fedcare.simulations.benchmarks.stock_deployment`: ``flower-superlink`` with TLS and
  SuperNode authentication, three ``flower-supernode`` whose own SuperExec launches one
  ``flwr-clientapp`` per message, ``flwr run``), running Flower's FedAvg with a small torch
  ClientApp shipped in its bundle (:mod:`fedcare.simulations.benchmarks.stock_app`). Nothing of
  fedcare's deployment code runs there. Started after fedcare's federation has stopped.

Per-round times are differences of successive end-of-round timestamps, so start-up and app
installation are not in them. Stock Flower's round is a train exchange then an evaluate
exchange; its clock starts at round 0 (no exchange: FedAvg's ``evaluate_fn``). fedcare's round is
one train exchange whose replies also carry each site's evaluation of the model it trained from
(:mod:`fedcare.server.round_loop`): the record of round ``r - 1`` is written when round ``r``'s
training ends, and the last record after a final evaluation exchange that no other round has. So
every row runs one round more than asked, and times the rounds after its first: fedcare's first
round has no start mark, and stock Flower's is left out likewise, so no row's figures hold a
first round's warm-up. A fedcare row times the rounds between the ends of successive training
exchanges (:func:`_fedcare_row`), never that final, shorter exchange. Each median is over those
rounds. Only one environment runs at a time; the host is otherwise shared, so the figures carry
its noise.
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
from fedcare.client.policy import SitePolicy
from fedcare.config import RunConfig, StrategyName
from fedcare.privacy.pki import add_site, generate_site_key, init_federation
from fedcare.server.coordinator import Coordinator
from fedcare.simulations import simulate
from fedcare.simulations.benchmarks.stock_app import PIDS_FILE, ROUNDS_FILE, write_app
from fedcare.simulations.benchmarks.stock_deployment import (
    StockDeployment,
    StockDeploymentError,
    stock_deployment,
)
from fedcare.simulations.scenarios import embedded_data_dir

SITES = ("cleveland", "hungarian", "va")
SIMULATION = "fedcare in simulation"
DEPLOYED = "fedcare deployed (3 SuperNodes, TLS)"
SECAGG = "fedcare deployed with SecAgg+ (same sites)"
STOCK = "stock Flower default deployment (reference)"
RUN_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class LatencyRow:
    """Seconds per round of one environment: each round's, and their median."""

    environment: str
    rounds: int
    median_round_s: float
    round_times_s: tuple[float, ...]


@dataclass(frozen=True)
class StockEvidence:
    """What shows the reference row ran stock Flower's default deployment, kept for the
    reader and the end-to-end test rather than taken on trust."""

    supernode_argv: tuple[tuple[str, ...], ...]  # as started: no --isolation, no secret
    supernode_groups: tuple[tuple[str, ...], ...]  # commands in each SuperNode's group, mid-run
    clientapp_calls: int  # ClientApp calls over the run (train + evaluate, every site)
    clientapp_processes: int  # distinct processes they ran in


@dataclass(frozen=True)
class LatencyReport:
    """Every environment's row, and ratios against stock Flower's default deployment."""

    rows: tuple[LatencyRow, ...]
    stock: StockEvidence

    def row(self, environment: str) -> LatencyRow | None:
        return next((r for r in self.rows if r.environment == environment), None)

    @property
    def reference(self) -> LatencyRow:
        row = self.row(STOCK)
        if row is None:  # run_latency_benchmark always measures it
            raise ValueError(f"no {STOCK!r} row")
        return row

    def ratio_vs_stock(self, row: LatencyRow) -> float:
        """``row``'s median over the stock default's median (< 1: faster than stock)."""
        return row.median_round_s / self.reference.median_round_s

    @property
    def deployed_vs_stock(self) -> float:
        deployed = self.row(DEPLOYED)
        if deployed is None:
            raise ValueError(f"no {DEPLOYED!r} row")
        return self.ratio_vs_stock(deployed)

    @property
    def secagg_vs_plain(self) -> float | None:
        """SecAgg+'s median round over plain fedcare's (same sites); None without SecAgg+."""
        secagg, plain = self.row(SECAGG), self.row(DEPLOYED)
        if secagg is None or plain is None:
            return None
        return secagg.median_round_s / plain.median_round_s


def _row(name: str, finished_at: list[float]) -> LatencyRow:
    """Round ``i`` lasts from the end of round ``i - 1`` (0: initial evaluation) to its end."""
    per_round = [later - earlier for earlier, later in itertools.pairwise(finished_at)]
    return LatencyRow(name, len(per_round), statistics.median(per_round), tuple(per_round))


def _fedcare_row(name: str, records: list[dict[str, float]], rounds: int) -> LatencyRow:
    """``rounds`` full rounds of a fedcare run of ``rounds + 1`` rounds: record ``i`` is written
    when training round ``i + 1`` ends, so records ``0 .. rounds`` mark ``rounds`` full rounds;
    the last record (after the final evaluation exchange alone) is left out."""
    if len(records) != rounds + 2:
        raise ValueError(f"{name}: {len(records)} round records, expected {rounds + 2}")
    return _row(name, [r["finished_at"] for r in records[: rounds + 1]])


def run_latency_benchmark(
    rounds: int = 4, secagg: bool = True, progress: Callable[[str], None] = print
) -> LatencyReport:
    """Time ``rounds`` FedAvg rounds of the 3-site run in each environment (module docstring)."""
    if rounds < 1:
        raise ValueError(f"rounds: {rounds} must be at least 1")
    config = RunConfig(rounds=rounds + 1, strategy=StrategyName.FEDAVG)  # see _fedcare_row
    rows: list[LatencyRow] = []
    with tempfile.TemporaryDirectory(prefix="fedcare-bench-") as tmp:
        root = Path(tmp)
        rows.append(_simulation(config, root, progress))
        rows += _fedcare_deployed(config, secagg, root, progress)
        stock_row, evidence = _stock_default(rounds, root / "stock", progress)
        rows.append(stock_row)
    return LatencyReport(tuple(rows), evidence)


def _simulation(config: RunConfig, root: Path, progress: Callable[[str], None]) -> LatencyRow:
    data = embedded_data_dir()
    scenario = root / "scenario"
    scenario.mkdir()
    for site in SITES:
        (scenario / f"{site}.data").write_bytes((data / f"processed.{site}.data").read_bytes())
    progress(f"{SIMULATION}: Flower simulation engine (Ray) ...")
    simulate(config.replace(scenario=str(scenario)), root / "sim")
    records = json.loads((root / "sim" / "rounds.json").read_text())
    return _fedcare_row(SIMULATION, records, config.rounds - 1)


def _fedcare_deployed(
    config: RunConfig, secagg: bool, root: Path, progress: Callable[[str], None]
) -> list[LatencyRow]:
    data = embedded_data_dir()
    coord = Coordinator(root / "coordinator")
    init_federation(coord.root, ["127.0.0.1", "localhost"])
    keys = {site: generate_site_key(root / "sites" / site, site) for site in SITES}
    for site in SITES:  # each site made its key pair; the owner registers the public key
        add_site(coord.root, site, keys[site].public_key)
    daemons: list[SiteDaemon] = []
    try:
        progress("fedcare deployed: starting the coordinator and 3 site daemons over TLS ...")
        address = coord.start()
        for site in SITES:
            daemon = SiteDaemon(root / "sites" / site)
            daemons.append(daemon)
            daemon.start(
                site, data / f"processed.{site}.data", keys[site].private_key,
                coord.root / "ca.crt", address, SitePolicy(require_dp=False),
            )  # fmt: skip
        runs = [(DEPLOYED, config)]
        if secagg:
            runs.append((SECAGG, config.replace(secure_aggregation=True)))
        rows = [_fedcare_run(coord, name, run, progress) for name, run in runs]
    finally:
        for daemon in daemons:
            daemon.stop()
        coord.stop()
    return rows


def _fedcare_run(
    coord: Coordinator, name: str, run: RunConfig, progress: Callable[[str], None]
) -> LatencyRow:
    progress(f"{name}: run ...")
    out = coord.submit(run, min_sites=len(SITES))
    report = _round_reporter(progress)
    records = coord.follow(out, run.rounds, lambda r: report(r["round"]), RUN_TIMEOUT_S)
    return _fedcare_row(name, records, run.rounds - 1)


def _stock_default(
    rounds: int, root: Path, progress: Callable[[str], None]
) -> tuple[LatencyRow, StockEvidence]:
    progress(f"{STOCK}: starting flower-superlink and 3 flower-supernode (TLS, auth) ...")
    out = root / "out"
    rounds += 1  # its first round is not timed (module docstring)
    with stock_deployment(root, SITES) as deployment:
        groups = deployment.supernode_group_commands()
        run_config = {"rounds": rounds, "min-sites": len(SITES), "out-dir": str(out)}
        app = write_app(root / "app", run_config)
        progress(f"{STOCK}: flwr run (Flower's FedAvg, torch ClientApp) ...")
        run_id = deployment.run(app)
        times = _follow_stock(deployment, run_id, out, rounds, _round_reporter(progress))
        argv = deployment.supernode_argv()
    pids = (out / PIDS_FILE).read_text().split() if (out / PIDS_FILE).exists() else []
    evidence = StockEvidence(
        tuple(map(tuple, argv)), tuple(map(tuple, groups)), len(pids), len(set(pids))
    )
    return _row(STOCK, times[1:]), evidence  # from the end of its first round


def _round_reporter(progress: Callable[[str], None]) -> Callable[[int], None]:
    """Reports each finished round, with seconds since the previous one."""
    last: list[float] = []

    def report(round_number: int) -> None:
        now = time.monotonic()
        since = f" ({now - last[-1]:.1f} s)" if last else " (the clock starts)"
        last.append(now)
        progress(f"  round {round_number}{since}")

    return report


def _follow_stock(
    deployment: StockDeployment,
    run_id: str,
    out: Path,
    rounds: int,
    on_round: Callable[[int], None],
    timeout_s: float = RUN_TIMEOUT_S,
) -> list[float]:
    """The stock run's end-of-round times (rounds 0..rounds); fails fast if the run ends early."""
    deadline = time.monotonic() + timeout_s
    path = out / ROUNDS_FILE
    seen, next_check = 0, time.monotonic() + 5
    while time.monotonic() < deadline:
        finished = False
        if time.monotonic() > next_check:  # asked before reading, so no last round is missed
            next_check = time.monotonic() + 5
            status = deployment.run_status(run_id)
            finished = status.startswith("finished")
        times: list[float] = json.loads(path.read_text())["times"] if path.exists() else []
        for number in range(seen, len(times)):
            on_round(number)
        seen = len(times)
        if seen >= rounds + 1:
            return times[: rounds + 1]
        if finished:
            raise StockDeploymentError(
                f"stock run {run_id} ended as {status} after round {seen - 1}; its processes' "
                f"logs are under {deployment.root}"
            )
        time.sleep(0.5)
    raise StockDeploymentError(f"stock run {run_id} did not finish in {timeout_s:.0f} s")
