"""Requests/s and p50/p99 latency of ``fedcare serve`` against KServe's own Python
``ModelServer`` serving the same signed release, measured side by side in one run.

Rows (each server in its own process, all started before the first cell, so every cell can
alternate between them):

* ``fedcare serve`` as it always runs (TLS is not optional): TLS with a serving certificate from
  the federation's CA, and an API key (bearer token) checked on every request;
* the reference, KServe's ``kserve.ModelServer`` as KServe ships it (its own defaults: no TLS,
  no authentication, per-request latency logging), with a ``kserve.Model`` that calls the same
  :meth:`fedcare.bundle.ReleasedModel.predict_proba`
  (:mod:`fedcare.simulations.benchmarks.serving_kserve`).

Cells: gRPC and REST (Open Inference Protocol v2, ``ModelInfer`` and ``/v2/models/NAME/infer``)
at each concurrency and batch size. The request is fixed: the first ``batch`` complete rows of
the packaged Cleveland file, raw clinical values, one ``FP32`` input per column as the model
metadata declares. One load generator (:mod:`fedcare.simulations.benchmarks.serving_load`, its
own process) sends every cell with the same client code; each cell runs ``repetitions`` times,
rows interleaved and their order reversed every other repetition; each figure is the median over
the repetitions. The host is shared (and the client shares its cores with the servers), so the
figures carry its noise: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.errors import ConfigError, FedcareError
from fedcare.processes import Daemon, free_port

HOST = "127.0.0.1"
FEDCARE = "fedcare serve (TLS + API key)"
KSERVE = "KServe ModelServer (reference)"
PROTOCOLS = ("grpc", "rest")
START_TIMEOUT_S = 120.0
DATATYPE = "FP32"
BENCH_MODULES = ("kserve", "aiohttp")
LOAD_MODULE = "fedcare.simulations.benchmarks.serving_load"


class ServingBenchmarkError(FedcareError):
    """A server did not start, or the load generator failed."""


@dataclass(frozen=True)
class Endpoint:
    """How the load generator reaches one row's server over one protocol."""

    server: str
    protocol: str
    port: int
    tls_ca: Path | None = None
    server_name: str | None = None
    api_key: str | None = None


@dataclass(frozen=True)
class Measurement:
    """One repetition of one cell."""

    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ServingRow:
    """One server, protocol, concurrency and batch: every repetition and their medians."""

    server: str
    protocol: str
    concurrency: int
    batch: int
    runs: tuple[Measurement, ...]

    @property
    def requests_per_s(self) -> float:
        return statistics.median(m.requests_per_s for m in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(m.p50_ms for m in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(m.p99_ms for m in self.runs)

    @property
    def cell(self) -> tuple[str, int, int]:
        return (self.protocol, self.concurrency, self.batch)


@dataclass(frozen=True)
class ServingReport:
    """Every row, the settings they ran under, and comparisons with the KServe reference."""

    rows: tuple[ServingRow, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    def row(self, server: str, protocol: str, concurrency: int, batch: int) -> ServingRow:
        for row in self.rows:
            if row.server == server and row.cell == (protocol, concurrency, batch):
                return row
        raise KeyError(f"no row {server!r} {protocol} c={concurrency} batch={batch}")

    def reference(self, row: ServingRow) -> ServingRow:
        return self.row(KSERVE, *row.cell)

    def throughput_ratio(self, row: ServingRow) -> float:
        """``row``'s requests/s over KServe's in the same cell (> 1: more than KServe)."""
        return row.requests_per_s / self.reference(row).requests_per_s

    def p99_ratio(self, row: ServingRow) -> float:
        """``row``'s p99 over KServe's in the same cell (< 1: a lower tail than KServe)."""
        return row.p99_ms / self.reference(row).p99_ms

    def goal_met(self, row: ServingRow) -> bool:
        """The issue's goal in one cell: at least KServe's throughput, at no worse a p99."""
        return self.throughput_ratio(row) >= 1.0 and self.p99_ratio(row) <= 1.0

    def to_json(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            record: dict[str, Any] = {
                "server": row.server,
                "protocol": row.protocol,
                "concurrency": row.concurrency,
                "batch": row.batch,
                "requests_per_s": row.requests_per_s,
                "p50_ms": row.p50_ms,
                "p99_ms": row.p99_ms,
                "runs": [asdict(m) for m in row.runs],
            }
            if row.server != KSERVE:
                record |= {
                    "throughput_vs_kserve": self.throughput_ratio(row),
                    "p99_vs_kserve": self.p99_ratio(row),
                    "goal_met": self.goal_met(row),
                }
            rows.append(record)
        return {"settings": self.settings, "rows": rows}


def require_bench_extra() -> None:
    """Refuse at once, naming the fix, when the bench extra is missing (KServe is the reference
    row; the load generator needs its stubs and aiohttp) rather than after a server start."""
    missing = [name for name in BENCH_MODULES if find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"bench serve: {', '.join(missing)} not installed; install the bench extra: "
            "pip install 'fedcare[bench]'"
        )


def benchmark_bundle(folder: Path) -> tuple[Path, Path]:
    """A signed release to serve when the caller brings none: fedcare's default model
    (``RunConfig``'s architecture and seed, untrained: serving speed does not depend on the
    weights' values) with the standardisation of the packaged Cleveland rows, signed by a
    throwaway release key. Returns (bundle, public key)."""
    from fedcare.bundle import preprocessing_record
    from fedcare.config import RunConfig
    from fedcare.privacy.pki import generate_release_key
    from fedcare.server.release import write_bundle
    from fedcare.simulations.scenarios import embedded_data_dir
    from fedcare.tasks import get_task
    from fedcare.tasks.heart_disease import flamby_features, read_raw
    from fedcare.weights import save_weights

    config = RunConfig()
    task = "heart-disease"
    features, _ = flamby_features(read_raw(embedded_data_dir() / "processed.cleveland.data"))
    std = features.std(axis=0)
    weights = folder / "weights.safetensors"
    save_weights(weights, get_task(task).build_model(config.model, config.seed).state_dict())
    keys = generate_release_key(folder / "release-key")
    preprocessing = preprocessing_record(
        task,
        config.model.value,
        config.seed,
        mean=features.mean(axis=0).tolist(),
        std=np.where(std > 0, std, 1.0).tolist(),
        source="benchmark (packaged Cleveland rows; not a release)",
    )
    card = {"name": task, "version": "bench", "intended_use": "benchmark only"}
    bundle = write_bundle(folder / "bundle", weights, preprocessing, card, keys.private_key)
    return bundle, keys.public_key


def request_inputs(batch: int) -> list[dict[str, Any]]:
    """The fixed request: the first ``batch`` complete rows of the packaged Cleveland file as
    Open Inference Protocol inputs, one per raw column, in the model's input order."""
    from fedcare.simulations.scenarios import embedded_data_dir
    from fedcare.tasks.heart_disease import MODEL_INPUTS, RAW_COLUMNS, complete_rows, read_raw

    rows = complete_rows(read_raw(embedded_data_dir() / "processed.cleveland.data"))
    if batch > rows.shape[0]:
        raise ServingBenchmarkError(f"batch {batch}: the Cleveland file has {rows.shape[0]} rows")
    index = {name: i for i, name in enumerate(RAW_COLUMNS)}
    return [
        {
            "name": name,
            "datatype": DATATYPE,
            "shape": [batch],
            "data": [float(v) for v in rows[:batch, index[name]].astype(np.float32)],
        }
        for name in MODEL_INPUTS
    ]


def plan_cells(
    endpoints: dict[str, dict[str, Endpoint]],
    model: str,
    concurrencies: tuple[int, ...],
    batches: tuple[int, ...],
    repetitions: int,
    seconds: float,
    warmup_s: float,
) -> list[dict[str, Any]]:
    """Every cell of every repetition, rows alternating within a cell and their order reversed
    every other repetition, so a slow spell of the host falls on no row alone."""
    servers = list(endpoints)
    cells = []
    inputs = {batch: request_inputs(batch) for batch in batches}
    for repetition in range(repetitions):
        order = servers if repetition % 2 == 0 else servers[::-1]
        for batch in batches:
            for protocol in PROTOCOLS:
                for concurrency in concurrencies:
                    for server in order:
                        endpoint = endpoints[server][protocol]
                        cells.append(
                            {
                                "id": f"{repetition}|{server}|{protocol}|{concurrency}|{batch}",
                                "protocol": protocol,
                                "host": HOST,
                                "port": endpoint.port,
                                "tls_ca": str(endpoint.tls_ca) if endpoint.tls_ca else None,
                                "server_name": endpoint.server_name,
                                "api_key": endpoint.api_key,
                                "model": model,
                                "concurrency": concurrency,
                                "inputs": inputs[batch],
                                "warmup_s": warmup_s,
                                "seconds": seconds,
                            }
                        )
    return cells


def run_load(cells: list[dict[str, Any]], workdir: Path) -> list[dict[str, Any]]:
    """Run the plan in the load generator's own process; its results, in plan order."""
    plan, results = workdir / "load-plan.json", workdir / "load-results.json"
    plan.write_text(json.dumps({"cells": cells}))
    budget = sum(float(c["warmup_s"]) + float(c["seconds"]) + 10.0 for c in cells) + 60.0
    process = subprocess.run(
        [sys.executable, "-m", LOAD_MODULE, str(plan), str(results)],
        capture_output=True, text=True, timeout=budget, check=False,
    )  # fmt: skip
    if process.returncode != 0:
        tail = (process.stderr or process.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ServingBenchmarkError(f"load generator failed: {tail[0]}")
    measured: list[dict[str, Any]] = json.loads(results.read_text())["cells"]
    return measured


def collect_rows(measured: list[dict[str, Any]]) -> tuple[ServingRow, ...]:
    """Group the repetitions of each (server, protocol, concurrency, batch), first-seen order."""
    runs: dict[tuple[str, str, int, int], list[Measurement]] = {}
    for result in measured:
        _, server, protocol, concurrency, batch = result["id"].split("|")
        key = (server, protocol, int(concurrency), int(batch))
        runs.setdefault(key, []).append(
            Measurement(
                requests=int(result["requests"]),
                requests_per_s=float(result["requests_per_s"]),
                p50_ms=float(result["p50_ms"]),
                p99_ms=float(result["p99_ms"]),
            )
        )
    return tuple(ServingRow(*key, runs=tuple(m)) for key, m in runs.items())


def check_same_model(measured: list[dict[str, Any]]) -> None:
    """Every server answered each request with the same probabilities: the rows served the same
    model on the same inputs (float32 on every path; 1e-6 allows for nothing but rounding)."""
    seen: dict[str, tuple[str, list[float]]] = {}
    for result in measured:
        _, server, _, _, batch = result["id"].split("|")
        first = seen.setdefault(batch, (server, result["probabilities"]))
        if not np.allclose(first[1], result["probabilities"], rtol=0, atol=1e-6):
            raise ServingBenchmarkError(
                f"{server} and {first[0]} answered batch {batch} differently; "
                "they do not serve the same model"
            )


def wait_ready(
    base: str, daemon: Daemon, log: Path, ca: Path | None, api_key: str | None
) -> dict[str, Any]:
    """Poll the server's Open Inference Protocol readiness endpoint until it answers 200; then
    return its server metadata (``GET /v2``: the name and version of the server that answers)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else False
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not daemon.alive():
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ServingBenchmarkError(f"{base}: the server exited: {tail[0]}")
        try:
            ready = httpx.get(f"{base}/v2/health/ready", headers=headers, verify=verify, timeout=2)
            if ready.status_code == 200:
                metadata: dict[str, Any] = httpx.get(
                    f"{base}/v2", headers=headers, verify=verify, timeout=2
                ).json()
                return metadata
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise ServingBenchmarkError(f"{base}: not ready after {START_TIMEOUT_S:.0f} s (log: {log})")


# A started server: its Open Inference Protocol server metadata and its endpoint per protocol.
Started = tuple[dict[str, Any], dict[str, Endpoint]]


@contextmanager
def kserve_server(bundle: Path, public_key: Path, workdir: Path) -> Iterator[Started]:
    """KServe's ModelServer with its defaults but two free ports (its --http_port/--grpc_port)."""
    http_port, grpc_port = free_port(HOST), free_port(HOST)
    argv = [
        sys.executable, "-m", "fedcare.simulations.benchmarks.serving_kserve",
        "--bundle", str(bundle), "--key", str(public_key),
        "--http_port", str(http_port), "--grpc_port", str(grpc_port),
    ]  # fmt: skip
    log = workdir / "kserve.log"
    daemon = Daemon(workdir / "kserve.pid")
    daemon.start(argv, log, dict(os.environ), http_port)
    try:
        metadata = wait_ready(f"http://{HOST}:{http_port}", daemon, log, None, None)
        yield (
            metadata,
            {
                "grpc": Endpoint(KSERVE, "grpc", grpc_port),
                "rest": Endpoint(KSERVE, "rest", http_port),
            },
        )
    finally:
        daemon.stop()


@contextmanager
def fedcare_server(bundle: Path, public_key: Path, workdir: Path) -> Iterator[Started]:
    """``fedcare serve`` as a user runs it: a serving certificate from the federation's CA
    (``fedcare pki init`` / ``serving-cert``), an API key in a keys file (``fedcare serve
    add-key``), its default access log (stderr, here its log file) and batch limit."""
    from fedcare.privacy.pki import init_federation, issue_serving_cert
    from fedcare.server.serving.keys import add_key

    keys_file = workdir / "api-keys.json"
    token = add_key(keys_file, "bench")
    pki = workdir / "pki"
    federation = init_federation(pki, [HOST])
    cert, key = issue_serving_cert(pki, federation.ca_key, [HOST])
    http_port, grpc_port = free_port(HOST), free_port(HOST)
    argv = [
        "fedcare", "serve", str(bundle), "--key", str(public_key), "--keys", str(keys_file),
        "--tls-cert", str(cert), "--tls-key", str(key),
        "--host", HOST, "--http-port", str(http_port), "--grpc-port", str(grpc_port),
    ]  # fmt: skip
    log = workdir / "fedcare.log"
    daemon = Daemon(workdir / "fedcare.pid")
    bin_dir = str(Path(sys.executable).parent)  # the fedcare next to this interpreter
    daemon.start(argv, log, os.environ | {"PATH": bin_dir + os.pathsep + os.environ["PATH"]}, 0)
    ca = federation.ca_cert
    try:
        metadata = wait_ready(f"https://{HOST}:{http_port}", daemon, log, ca, token)
        yield (
            metadata,
            {
                protocol: Endpoint(FEDCARE, protocol, port, ca, None, token)
                for protocol, port in (("grpc", grpc_port), ("rest", http_port))
            },
        )
    finally:
        daemon.stop()


def run_serving_benchmark(
    bundle: Path | None = None,
    public_key: Path | None = None,
    *,
    seconds: float = 4.0,
    warmup_s: float = 1.0,
    repetitions: int = 3,
    concurrencies: tuple[int, ...] = (1, 16),
    batches: tuple[int, ...] = (1,),
    progress: Callable[[str], None] = lambda _: None,
) -> ServingReport:
    """Start every server on the same release (``bundle``, or :func:`benchmark_bundle`'s), run
    every cell through one load generator, return the medians."""
    require_bench_extra()
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="fedcare-bench-serve-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        if bundle is None or public_key is None:
            progress("signing a benchmark release (untrained default model) ...")
            bundle, public_key = benchmark_bundle(workdir)
        from fedcare.bundle import load_bundle

        model = load_bundle(bundle, public_key).name
        servers: dict[str, Started] = {}
        progress("starting fedcare serve ...")
        servers[FEDCARE] = stack.enter_context(fedcare_server(bundle, public_key, workdir))
        progress("starting KServe's ModelServer ...")
        servers[KSERVE] = stack.enter_context(kserve_server(bundle, public_key, workdir))
        endpoints = {server: started[1] for server, started in servers.items()}
        cells = plan_cells(endpoints, model, concurrencies, batches, repetitions, seconds, warmup_s)
        progress(
            f"{len(cells)} cells of {warmup_s:g} s warm-up + {seconds:g} s measured "
            f"(about {len(cells) * (warmup_s + seconds) / 60:.1f} min) ..."
        )
        measured = run_load(cells, workdir)
    check_same_model(measured)
    settings = {
        "seconds": seconds,
        "warmup_s": warmup_s,
        "repetitions": repetitions,
        "concurrencies": list(concurrencies),
        "batches": list(batches),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "servers": {
            server: {
                "metadata": metadata,  # GET /v2: which server answered
                "tls": endpoints[server]["rest"].tls_ca is not None,
                "api_key": endpoints[server]["rest"].api_key is not None,
            }
            for server, (metadata, _) in servers.items()
        },
        "rows": {
            FEDCARE: "fedcare serve as it always runs (TLS cannot be turned off): TLS with a "
            "certificate from the federation CA, an API key checked on every request",
            KSERVE: "kserve.ModelServer() with KServe's own defaults (1 uvicorn worker, gRPC "
            "max_threads 4, latency logging): no TLS, no authentication; same model code",
        },
    }
    return ServingReport(collect_rows(measured), settings)


def plot_report(report: ServingReport, path: Path) -> None:
    """Requests/s per cell, one bar per server, p99 written above each bar (PNG, atomic)."""
    import io

    from matplotlib.figure import Figure

    from fedcare.atomic import write_bytes_atomic

    cells = list(dict.fromkeys(row.cell for row in report.rows))
    servers = list(dict.fromkeys(row.server for row in report.rows))
    figure = Figure(figsize=(max(6.0, 1.6 * len(cells)), 4.5))
    axes = figure.add_subplot()
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        rows = [report.row(server, *cell) for cell in cells]
        xs = [c + (i - (len(servers) - 1) / 2) * width for c in range(len(cells))]
        bars = axes.bar(xs, [r.requests_per_s for r in rows], width, label=server)
        for bar, row in zip(bars, rows, strict=True):
            axes.annotate(
                f"{row.p99_ms:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center", va="bottom", fontsize=6,
            )  # fmt: skip
    axes.set_xticks(range(len(cells)), [f"{p} c={c} b={b}" for p, c, b in cells], fontsize=7)
    axes.set_ylabel("requests/s (median; p99 ms above each bar)")
    axes.set_ylim(top=axes.get_ylim()[1] * 1.15)  # room for the legend above the bars
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    write_bytes_atomic(path, buffer.getvalue())
