"""The DP benchmark runs every variant and reports a ratio for each (figures live in README)."""

from __future__ import annotations

from pathlib import Path

from fedcare.simulations.benchmarks import run_dp_benchmark


def test_benchmark_times_every_variant(site_paths: dict[str, Path]) -> None:
    rows = run_dp_benchmark(
        site_paths["cleveland"], repetitions=1, synthetic_rows=300, thread_counts=(1,)
    )
    by_workload: dict[str, list[str]] = {}
    for row in rows:
        assert row.median_s > 0
        assert (row.ratio is None) == (row.variant == "plain")
        by_workload.setdefault(row.workload, []).append(row.variant)
    assert len(by_workload) == 3
    for variants in by_workload.values():
        assert len(variants) == 9 and "dp ew/indexed" in variants
