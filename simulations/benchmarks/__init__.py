"""Benchmarks that print measured figures (medians of side-by-side runs), never timed tests."""

from fedcare.simulations.benchmarks.accuracy import AccuracyReport, run_accuracy_benchmark
from fedcare.simulations.benchmarks.dp_cost import DpCostRow, run_dp_benchmark

__all__ = ["AccuracyReport", "DpCostRow", "run_accuracy_benchmark", "run_dp_benchmark"]
