"""Choosing the default global-model settings on validation rows only (issue #13 item 3).

The default run config (:class:`fedcare.config.RunConfig`) was chosen by measurement, and the
measurement must not read a single test row, or the test figures fedcare reports
(``fedcare simulate``, ``fedcare bench accuracy``) would be tuned on and optimistic.

How. Every candidate setting is simulated with each site's ``holdout`` set to ``validation``
(:func:`fedcare.client.site.validation_holdout`): a site trains on 66 % of its training rows
and is scored on the other 34 % (a fixed, seeded, label-stratified split), and its test rows
are dropped before anything trains or evaluates. Each candidate runs for several seeds
(:data:`SELECTION_SEEDS`, disjoint from the benchmark's 42-46) and is ranked by the mean over
seeds of the FLamby metric (mean over sites of accuracy, here validation accuracy), ties broken
by mean AUROC. ``fedcare bench select-global`` runs it and prints the table; README ("How the
defaults were chosen") records the run that chose the current defaults.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.client.site import HOLDOUT_VALIDATION
from fedcare.config import RunConfig
from fedcare.errors import ConfigError
from fedcare.simulations.runner import load_sites, run_federation
from fedcare.simulations.scenarios import get_scenario
from fedcare.simulations.simulation import site_policies

SELECTION_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Candidate:
    """A named setting: the fields of :class:`RunConfig` it changes from the defaults."""

    name: str
    changes: Mapping[str, Any]

    def config(self, base: RunConfig, seed: int) -> RunConfig:
        return base.replace(**dict(self.changes), seed=seed)


@dataclass(frozen=True)
class CandidateResult:
    """A candidate's validation figures: per seed, the mean over sites."""

    candidate: Candidate
    accuracy: tuple[float, ...]
    auroc: tuple[float, ...]
    per_site_accuracy: Mapping[str, float]  # mean over seeds

    @property
    def mean_accuracy(self) -> float:
        return statistics.fmean(self.accuracy)

    @property
    def mean_auroc(self) -> float:
        return statistics.fmean(self.auroc)

    @property
    def spread(self) -> float:
        return statistics.stdev(self.accuracy) if len(self.accuracy) > 1 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.candidate.name,
            "changes": dict(self.candidate.changes),
            "mean_accuracy": self.mean_accuracy,
            "sd": self.spread,
            "mean_auroc": self.mean_auroc,
            "accuracy": list(self.accuracy),
            "auroc": list(self.auroc),
            "per_site_accuracy": dict(self.per_site_accuracy),
        }


NEIGHBOURS: tuple[Candidate, ...] = (
    Candidate("default", {}),
    Candidate("local-epochs-x0.5", {"local_epochs": "half"}),
    Candidate("local-epochs-x2", {"local_epochs": "double"}),
    Candidate("learning-rate-x2.5", {"learning_rate": 2.5}),
    Candidate("learning-rate-x0.4", {"learning_rate": 0.4}),
    Candidate("server-learning-rate-x3", {"server_learning_rate": 3.0}),
    Candidate("server-learning-rate-x0.33", {"server_learning_rate": 1 / 3}),
    Candidate("batch-size-x2", {"batch_size": "double"}),
    Candidate("weighting-examples", {"weighting": "examples"}),
    Candidate("model-mlp", {"model": "mlp"}),
    Candidate("strategy-fedavg", {"strategy": "fedavg"}),
    Candidate("strategy-fedprox", {"strategy": "fedprox"}),
    Candidate("strategy-fedadam", {"strategy": "fedadam"}),
)
"""One change at a time from the defaults (a number multiplies the default; "half" and "double"
halve or double an integer): ``fedcare bench select-global`` checks that no neighbour of the
current defaults beats them on validation."""


def neighbour(candidate: Candidate, base: RunConfig) -> Candidate:
    """``candidate`` with its relative changes resolved against ``base`` (see NEIGHBOURS)."""
    changes: dict[str, Any] = {}
    for key, value in candidate.changes.items():
        current = getattr(base, key)
        if value == "half":
            value = max(1, current // 2)
        elif value == "double":
            value = current * 2
        elif isinstance(value, float) and isinstance(current, float):
            value = current * value
        changes[key] = value
    return Candidate(candidate.name, changes)


def known_names(names: Sequence[str]) -> None:
    """Refuse, naming them, settings that are not among :data:`NEIGHBOURS`."""
    known = [c.name for c in NEIGHBOURS]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")


def rank(results: Sequence[CandidateResult]) -> list[CandidateResult]:
    """Best first: mean validation accuracy over seeds, then mean validation AUROC."""
    return sorted(results, key=lambda r: (-r.mean_accuracy, -r.mean_auroc))


def final_round_figures(
    rounds: Sequence[Mapping[str, Any]],
) -> tuple[float, float, dict[str, float]]:
    """The last round's mean accuracy and mean AUROC over sites, and each site's accuracy."""
    sites = rounds[-1]["sites"]
    accuracy = {name: float(m["accuracy"]) for name, m in sites.items()}
    aurocs = [float(m["auroc"]) for m in sites.values() if m.get("auroc") is not None]
    return statistics.fmean(accuracy.values()), statistics.fmean(aurocs), accuracy


def evaluate_candidates(
    candidates: Sequence[Candidate],
    out_dir: Path,
    base: RunConfig | None = None,
    seeds: Sequence[int] = SELECTION_SEEDS,
    progress: Callable[[str], None] = lambda _: None,
) -> list[CandidateResult]:
    """Simulate every candidate for every seed on the validation federation; ranked."""
    base = base or RunConfig()
    scenario = get_scenario(base.scenario, base.task)
    load_sites(base, scenario)  # every site file through the data gate, once, before Ray starts
    started = time.monotonic()
    results = []
    for candidate in candidates:
        accuracy, auroc, per_site = [], [], []
        policies = site_policies(candidate.config(base, 0), scenario, None, None)  # not by seed
        for seed in seeds:
            config = candidate.config(base, seed)
            run_dir = out_dir / "runs" / f"{candidate.name}-seed{seed}"
            rounds = run_federation(config, scenario, run_dir, policies, holdout=HOLDOUT_VALIDATION)
            mean_acc, mean_auroc, sites = final_round_figures(rounds)
            accuracy.append(mean_acc)
            auroc.append(mean_auroc)
            per_site.append(sites)
            progress(
                f"{candidate.name} seed {seed}: validation accuracy {mean_acc:.3f}, "
                f"AUROC {mean_auroc:.3f} ({time.monotonic() - started:.0f} s)"
            )
        results.append(
            CandidateResult(
                candidate,
                tuple(accuracy),
                tuple(auroc),
                {s: statistics.fmean(p[s] for p in per_site) for s in per_site[0]},
            )
        )
    return rank(results)
