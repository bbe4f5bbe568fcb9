"""Benchmarks that print measured figures (medians of side-by-side runs), never timed tests."""

from fedcare.simulations.benchmarks.dp_cost import DpCostRow, run_dp_benchmark

__all__ = ["DpCostRow", "run_dp_benchmark"]
