"""End to end: ``fedcare bench latency`` measures stock Flower's default deployment in the same
run and states fedcare's figures against it, so a speed claim cannot rest on a reference that
secretly ran fedcare's own deployment (as the stock row once did, on fedcare's SuperNodes).

Without SecAgg+ (``--no-secagg``): its rounds alone took over five minutes at two rounds on the
2-core machine; the SecAgg+ row shares every code path of the plain deployed row but the run
config, and ``tests/e2e/test_deployment.py`` runs SecAgg+ deployed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.simulations.benchmarks import round_latency
from fedcare.simulations.benchmarks.round_latency import (
    DEPLOYED,
    SIMULATION,
    STOCK,
    LatencyReport,
)

pytestmark = pytest.mark.slow
ROUNDS = 1  # one timed round per row (the bench runs one more, untimed, first)
SITES = 3
MESSAGES_PER_ROUND = 2  # train and evaluate, to every site


def test_latency_is_measured_against_stock_flowers_default_deployment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: keep the report the command prints
    reports: list[LatencyReport] = []
    measure = round_latency.run_latency_benchmark

    def keep(rounds: int, secagg: bool, progress: Callable[[str], None]) -> LatencyReport:
        report = measure(rounds, secagg, progress)
        reports.append(report)
        return report

    monkeypatch.setattr(round_latency, "run_latency_benchmark", keep)

    # Execute
    result = CliRunner().invoke(app, ["bench", "latency", "--rounds", str(ROUNDS), "--no-secagg"])

    # Assert: every row timed every round
    assert result.exit_code == 0, result.output[-3000:]
    (report,) = reports
    assert [row.environment for row in report.rows] == [SIMULATION, DEPLOYED, STOCK]
    for row in report.rows:
        assert row.rounds == len(row.round_times_s) == ROUNDS
        assert row.median_round_s > 0 and min(row.round_times_s) > 0
    # ratios are against the stock default row
    stock, deployed = report.reference, report.row(DEPLOYED)
    assert stock.environment == STOCK and deployed is not None
    assert report.ratio_vs_stock(stock) == 1.0
    assert report.deployed_vs_stock == deployed.median_round_s / stock.median_round_s
    line = f"fedcare deployed / stock Flower default: {report.deployed_vs_stock:.2f}x (goal <= 0.5)"
    assert line in result.output
    assert report.secagg_vs_plain is None and "SecAgg+ round" not in result.output
    # the stock row ran stock processes: SuperNodes with Flower's default isolation, each with
    # the flower-superexec it launched itself, one fresh flwr-clientapp process per message
    evidence = report.stock
    assert len(evidence.supernode_argv) == len(evidence.supernode_groups) == SITES
    for argv, group in zip(evidence.supernode_argv, evidence.supernode_groups, strict=True):
        assert argv[0] == "flower-supernode" and "--isolation" not in argv
        assert "--superexec-auth-secret-file" not in argv
        assert any("flower-superexec" in command for command in group), group
        assert not any("fedcare.client.executor" in command for command in group)
    calls = SITES * MESSAGES_PER_ROUND * (ROUNDS + 1)  # every row runs one untimed round more
    assert evidence.clientapp_calls == evidence.clientapp_processes == calls
