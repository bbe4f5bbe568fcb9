"""Discrete-time survival models (a hazard per fixed interval) and their per-patient loss.

A model maps a patient's features to one logit per interval of ``INTERVAL_EDGES``; the hazard
h_k = sigmoid(logit_k) is the probability of dying in interval k having survived to its start,
and survival to the end of interval k is the product of (1 - h_j) for j <= k. Each patient
is one row and one loss term, so Opacus' per-sample clipping clips per patient. Both models
are plain ``nn.Linear`` layers (and a ReLU), which Opacus computes per-sample gradients for.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedcare.errors import ConfigError
from fedcare.tasks.names import ModelName
from fedcare.tasks.ncctg_lung.preprocess import Float32Array
from fedcare.tasks.ncctg_lung.schema import INTERVAL_EDGES, N_FEATURES, N_INTERVALS

MLP_HIDDEN = 16  # 156 training patients in all: a small hidden layer
Reduction = Literal["none", "mean", "sum"]
REDUCTIONS: tuple[Reduction, ...] = ("none", "mean", "sum")


class LinearLogisticHazard(nn.Module):
    """logit h_k(x) = alpha_k + x . beta: one risk score shifts every interval's baseline.

    The discrete-time analogue of Cox's model (proportional odds of the hazard), with
    ``N_INTERVALS + N_FEATURES`` parameters. The baseline is a bias-free ``nn.Linear`` fed a
    constant 1, so Opacus sees only layers it supports and computes its per-patient gradient.
    """

    def __init__(self, n_features: int = N_FEATURES, n_intervals: int = N_INTERVALS) -> None:
        super().__init__()
        self.risk = nn.Linear(n_features, 1, bias=False)
        self.baseline = nn.Linear(1, n_intervals, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        logits: torch.Tensor = self.baseline(ones) + self.risk(x)
        return logits


def build_model(model: ModelName, seed: int) -> nn.Module:
    """A freshly initialised model, identical for the same ``seed``; the global generator's
    state is restored afterwards, so building a model never shifts anyone else's draws."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if model is ModelName.LOGREG:
            return LinearLogisticHazard()
        return nn.Sequential(
            nn.Linear(N_FEATURES, MLP_HIDDEN),
            nn.ReLU(),
            nn.Linear(MLP_HIDDEN, N_INTERVALS),
        )
    finally:
        torch.random.set_rng_state(generator_state)


class DiscreteHazardNLL(nn.Module):
    """Negative log-likelihood of the discrete hazards, one term per patient.

    ``target`` holds :func:`~fedcare.tasks.ncctg_lung.preprocess.discretise`'s
    ``[s, d]`` per patient: survived intervals 0..s-1, and died in interval s if d = 1. The
    patient's term is ``-(sum_{j<s} log(1 - h_j) + d log h_s)``; a censored patient (d = 0)
    contributes only the intervals survived. ``reduction``: ``"mean"`` for DP-SGD (Opacus'
    ``loss_reduction="mean"``), ``"sum"``, or ``"none"`` for the per-patient terms.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ConfigError(
                f"discrete-hazard loss: reduction {reduction!r}; choose one of "
                f"{', '.join(REDUCTIONS)}"
            )
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        intervals = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
        survived = target[:, 0:1]
        died = (intervals == survived) & (target[:, 1:2] > 0)
        log_survive = F.logsigmoid(-logits)  # log(1 - h), stable for large logits
        log_hazard = F.logsigmoid(logits)
        per_patient = -(
            torch.where(intervals < survived, log_survive, torch.zeros_like(logits)).sum(dim=1)
            + torch.where(died, log_hazard, torch.zeros_like(logits)).sum(dim=1)
        )
        if self.reduction == "mean":
            return per_patient.mean()
        if self.reduction == "sum":
            return per_patient.sum()
        return per_patient


def survival_at_edges(logits: torch.Tensor) -> torch.Tensor:
    """S at every edge of ``INTERVAL_EDGES`` (S(0) = 1), shape (patients, intervals + 1)."""
    log_survival = torch.cumsum(F.logsigmoid(-logits), dim=1)
    start = torch.zeros(logits.shape[0], 1, dtype=logits.dtype, device=logits.device)
    return torch.exp(torch.cat([start, log_survival], dim=1))


def predict_survival(model: nn.Module, x: Float32Array, grid: np.ndarray) -> np.ndarray:
    """Each patient's survival at the days in ``grid``, shape (patients, len(grid)).

    Between edges S is interpolated linearly (deaths spread uniformly over an interval);
    beyond the last edge it stays at its last value.
    """
    model.eval()
    with torch.no_grad():
        at_edges = survival_at_edges(model(torch.from_numpy(x))).double().numpy()
    return np.stack([np.interp(grid, INTERVAL_EDGES, row) for row in at_edges])
