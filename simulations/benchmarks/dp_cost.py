"""What DP-SGD costs a site: one local epoch with Opacus vs the same epoch without DP.

Same model, data, batch size and torch threads, measured side by side in one process,
alternating plain and DP repetitions so machine noise hits both; medians reported. A DP epoch
includes what a real round pays: privatising a fresh model (Opacus' ``make_private``) and
Poisson sampling.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedcare.privacy.accounting import poisson_sample_rate
from fedcare.privacy.dp_sgd import BatchLoading, DpSgdSettings, GradSampleMode, train_dp_sgd
from fedcare.tasks import ModelName, get_task
from fedcare.tasks.base import FloatArray
from fedcare.training import LocalTrainingPlan, train_local


@dataclass(frozen=True)
class Workload:
    """A model factory and a training set to time."""

    name: str
    build: Callable[[], nn.Module]
    x: FloatArray
    y: FloatArray
    batch_size: int


@dataclass(frozen=True)
class DpCostRow:
    """Median seconds of one local epoch, and the ratio to the plain epoch."""

    workload: str
    variant: str
    threads: int
    median_s: float
    ratio: float | None


def _synthetic(rows: int, features: int, seed: int = 0) -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features)).astype(np.float32)
    logits = x @ rng.standard_normal(features).astype(np.float32)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return x, y


def _mlp(widths: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def workloads(clinical_path: Path, synthetic_rows: int) -> list[Workload]:
    """The default clinical model on Cleveland, and a larger synthetic tabular set."""
    task = get_task("heart-disease")
    site = task.load_site("cleveland", clinical_path)
    x, y = _synthetic(synthetic_rows, 30)
    n = site.n_train
    return [
        Workload(
            f"clinical logreg {n}x13 B=8",
            lambda: task.build_model(ModelName.LOGREG, 0), site.x_train, site.y_train, 8,
        ),
        Workload(
            f"clinical mlp {n}x13 B=8",
            lambda: task.build_model(ModelName.MLP, 0), site.x_train, site.y_train, 8,
        ),
        Workload(
            f"synthetic mlp 30-64-64-1 {synthetic_rows}x30 B=64",
            lambda: _mlp((30, 64, 64, 1)), x, y, 64,
        ),
    ]  # fmt: skip


def _plain_epoch(work: Workload) -> None:
    plan = LocalTrainingPlan(epochs=1, batch_size=work.batch_size, learning_rate=0.05, seed=0)
    train_local(work.build(), nn.BCEWithLogitsLoss(), work.x, work.y, plan)


def _dp_epoch(work: Workload, mode: GradSampleMode, loading: BatchLoading) -> None:
    rate = poisson_sample_rate(work.x.shape[0], work.batch_size)
    settings = DpSgdSettings(1.0, 1.0, rate, 1, 0.05, mode, loading)
    train_dp_sgd(work.build(), nn.BCEWithLogitsLoss(), work.x, work.y, settings)


def _timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run_dp_benchmark(
    clinical_path: Path,
    repetitions: int = 7,
    synthetic_rows: int = 20_000,
    thread_counts: tuple[int, ...] = (1, 2),
    progress: Callable[[str], None] = lambda _: None,
) -> list[DpCostRow]:
    """Time plain vs each DP variant per workload and thread count; medians and ratios."""
    rows: list[DpCostRow] = []
    variants = [(m, lo) for m in GradSampleMode for lo in BatchLoading]
    previous_threads = torch.get_num_threads()
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for work in workloads(clinical_path, synthetic_rows):
                progress(f"{work.name}, {threads} thread(s)")
                actions: dict[str, Callable[[], None]] = {"plain": partial(_plain_epoch, work)}
                for mode, loading in variants:
                    actions[f"dp {mode}/{loading}"] = partial(_dp_epoch, work, mode, loading)
                for action in actions.values():  # warm-up: imports, allocator, first privatisation
                    action()
                samples: dict[str, list[float]] = {name: [] for name in actions}
                for _ in range(repetitions):  # interleaved so machine noise hits every variant
                    for name, action in actions.items():
                        samples[name].append(_timed(action))
                plain = statistics.median(samples["plain"])
                for name, values in samples.items():
                    median = statistics.median(values)
                    ratio = None if name == "plain" else median / plain
                    rows.append(DpCostRow(work.name, name, threads, median, ratio))
    finally:
        torch.set_num_threads(previous_threads)
    return rows
