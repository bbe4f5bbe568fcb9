"""``fedcare bench serve``: fedcare serve and KServe's own ModelServer, side by side in one run.

The end-to-end test runs the command with tiny cells (one repetition, a fraction of a second
each) and checks that every row has every cell with positive figures, that the JSON holds the
same, and that the reference row really was KServe (its own server metadata) without TLS or a
key while fedcare's row used both. The other tests pin the parts a speed claim rests on: medians
over repetitions, rows interleaved with their order reversed, the same model in every row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.errors import ConfigError
from fedcare.simulations.benchmarks import serving
from fedcare.simulations.benchmarks.serving import (
    FEDCARE,
    KSERVE,
    PROTOCOLS,
    Endpoint,
    ServingBenchmarkError,
    ServingReport,
    check_same_model,
    collect_rows,
    plan_cells,
    require_bench_extra,
)

CONCURRENCIES = (1, 16)
BATCHES = (1, 64)


def test_bench_serve_measures_fedcare_and_kserve_in_every_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: keep the report the command prints
    reports: list[ServingReport] = []
    measure = serving.run_serving_benchmark

    def keep(*args: Any, **kwargs: Any) -> ServingReport:
        report = measure(*args, **kwargs)
        reports.append(report)
        return report

    monkeypatch.setattr(serving, "run_serving_benchmark", keep)
    figures, plot = tmp_path / "serve.json", tmp_path / "serve.png"

    # Execute
    result = CliRunner().invoke(
        app,
        ["bench", "serve", "--seconds", "0.3", "--warmup", "0.1", "--repetitions", "1",
         "--concurrency", "1,16", "--batch", "1,64", "--json", str(figures), "--plot", str(plot)],
    )  # fmt: skip

    # Assert: both servers, every protocol, concurrency and batch, positive figures
    assert result.exit_code == 0, result.output[-3000:]
    (report,) = reports
    cells = {(p, c, b) for p in PROTOCOLS for c in CONCURRENCIES for b in BATCHES}
    for server in (FEDCARE, KSERVE):
        assert {row.cell for row in report.rows if row.server == server} == cells
    assert len(report.rows) == 2 * len(cells)
    for row in report.rows:
        assert len(row.runs) == 1
        assert row.requests_per_s > 0 and 0 < row.p50_ms <= row.p99_ms
    # the JSON holds the same rows, with the comparison against KServe on fedcare's
    written = json.loads(figures.read_text())
    assert len(written["rows"]) == len(report.rows)
    for record in written["rows"]:
        assert record["requests_per_s"] > 0 and record["p99_ms"] > 0
        assert ("throughput_vs_kserve" in record) == (record["server"] == FEDCARE)
    assert plot.read_bytes().startswith(b"\x89PNG")
    # the reference answered as KServe itself, plain and open; fedcare over TLS with a key
    servers = report.settings["servers"]
    assert servers[KSERVE]["metadata"]["name"] == "kserve"
    assert (servers[KSERVE]["tls"], servers[KSERVE]["api_key"]) == (False, False)
    assert servers[FEDCARE]["metadata"]["name"] == "fedcare"
    assert (servers[FEDCARE]["tls"], servers[FEDCARE]["api_key"]) == (True, True)
    # the printed table names both rows and what each ran with
    for server in (FEDCARE, KSERVE):
        assert f"{server}: " in result.output
    assert "KServe's req/s" in result.output


def _measured(server: str, repetition: int, rps: float, p99: float, probability: float) -> dict:
    return {
        "id": f"{repetition}|{server}|grpc|1|1",
        "requests": int(rps),
        "requests_per_s": rps,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "probabilities": [probability],
    }


def test_each_figure_is_the_median_of_its_repetitions() -> None:
    measured = [
        _measured(FEDCARE, 0, 100.0, 9.0, 0.5),
        _measured(FEDCARE, 1, 900.0, 1.0, 0.5),
        _measured(FEDCARE, 2, 300.0, 3.0, 0.5),
        *(_measured(KSERVE, r, 200.0, 2.0, 0.5) for r in range(3)),
    ]
    report = ServingReport(collect_rows(measured))
    row = report.row(FEDCARE, "grpc", 1, 1)
    assert len(row.runs) == 3
    assert (row.requests_per_s, row.p99_ms, row.p50_ms) == (300.0, 3.0, 1.5)
    assert report.throughput_ratio(row) == 1.5 and report.p99_ratio(row) == 1.5
    assert not report.goal_met(row)  # more requests/s, but at a worse p99


def test_rows_alternate_within_a_cell_and_reverse_every_other_repetition() -> None:
    endpoints = {
        server: {p: Endpoint(server, p, port) for p in PROTOCOLS}
        for server, port in ((FEDCARE, 1), (KSERVE, 2))
    }
    cells = plan_cells(endpoints, "m", (1,), (1,), repetitions=2, seconds=1.0, warmup_s=0.5)
    servers = [cell["id"].split("|")[1] for cell in cells]
    assert servers == [FEDCARE, KSERVE, FEDCARE, KSERVE, KSERVE, FEDCARE, KSERVE, FEDCARE]
    assert all(cell["warmup_s"] == 0.5 and cell["seconds"] == 1.0 for cell in cells)
    # the same request to every server: the first complete Cleveland row, raw values
    assert len({json.dumps(cell["inputs"]) for cell in cells}) == 1
    assert cells[0]["inputs"][0] == {
        "name": "age",
        "datatype": "FP32",
        "shape": [1],
        "data": [63.0],
    }


@pytest.mark.parametrize("other", [0.5, 0.5 + 1e-3])
def test_rows_that_answer_differently_do_not_serve_the_same_model(other: float) -> None:
    measured = [_measured(FEDCARE, 0, 1.0, 1.0, 0.5), _measured(KSERVE, 0, 1.0, 1.0, other)]
    check: Callable[[], None] = lambda: check_same_model(measured)  # noqa: E731
    if other == 0.5:
        check()
    else:
        with pytest.raises(ServingBenchmarkError, match="not serve the same model"):
            check()


def test_without_the_bench_extra_it_refuses_at_once_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_bench_extra()  # installed with the test extra
    real = serving.find_spec
    monkeypatch.setattr(serving, "find_spec", lambda name: None if name == "kserve" else real(name))
    with pytest.raises(ConfigError, match=r"kserve not installed.*pip install 'fedcare\[bench\]'"):
        require_bench_extra()
