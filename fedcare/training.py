"""The one local training and evaluation loop, shared by site clients and the baselines.

Baselines (local-only, pooled) call exactly the code the ClientApp calls, so "federated vs
local vs pooled" compares aggregation alone, not two training implementations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedcare.metrics import BinaryMetrics, binary_metrics
from fedcare.tasks.base import FloatArray


@dataclass(frozen=True)
class LocalTrainingPlan:
    """How one site trains in one round (or a baseline in total)."""

    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    proximal_mu: float = 0.0


def train_local(
    model: nn.Module,
    loss_fn: nn.Module,
    x: FloatArray,
    y: FloatArray,
    plan: LocalTrainingPlan,
    global_weights: Mapping[str, torch.Tensor] | None = None,
) -> float:
    """Mini-batch SGD for ``plan.epochs``; returns the mean training loss of the last epoch.

    With ``plan.proximal_mu > 0`` it adds FedProx's proximal term
    ``mu/2 * ||w - w_global||^2``: Flower's FedProx only sends ``mu``; the client owns the term.
    """
    generator = torch.Generator().manual_seed(plan.seed)
    features = torch.from_numpy(np.ascontiguousarray(x))
    labels = torch.from_numpy(np.ascontiguousarray(y)).reshape(-1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=plan.learning_rate)
    anchors = _proximal_anchors(model, global_weights) if plan.proximal_mu > 0 else []
    model.train()
    last_epoch_loss = 0.0
    for _ in range(plan.epochs):
        order = torch.randperm(features.shape[0], generator=generator)
        total, seen = 0.0, 0
        for start in range(0, features.shape[0], plan.batch_size):
            batch = order[start : start + plan.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(features[batch]), labels[batch])
            total += float(loss.detach()) * batch.numel()
            seen += batch.numel()
            if anchors:
                proximal = sum(((p - a) ** 2).sum() for p, a in anchors)
                loss = loss + 0.5 * plan.proximal_mu * proximal
            loss.backward()
            optimizer.step()
        last_epoch_loss = total / max(seen, 1)
    return last_epoch_loss


def _proximal_anchors(
    model: nn.Module, global_weights: Mapping[str, torch.Tensor] | None
) -> list[tuple[nn.Parameter, torch.Tensor]]:
    if global_weights is None:
        raise ValueError("FedProx needs the round's global weights to anchor the proximal term")
    return [(p, global_weights[name].detach().clone()) for name, p in model.named_parameters()]


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: nn.Module, x: FloatArray, y: FloatArray) -> BinaryMetrics:
    """Loss, accuracy at 0.5 and AUROC of ``model`` on one labelled set."""
    model.eval()
    features = torch.from_numpy(np.ascontiguousarray(x))
    labels = torch.from_numpy(np.ascontiguousarray(y)).reshape(-1, 1)
    logits = model(features)
    loss = float(loss_fn(logits, labels))
    return binary_metrics(logits.reshape(-1).numpy(), y, loss)
