"""The shared training loop learns, and FedProx's proximal term pulls towards the anchor."""

from __future__ import annotations

from pathlib import Path

import torch

from fedcare.tasks import ModelName, get_task
from fedcare.training import LocalTrainingPlan, evaluate, train_local

TASK = get_task("heart-disease")


def _distance(model: torch.nn.Module, anchor: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return float(sum(((p - anchor[n]) ** 2).sum() for n, p in model.named_parameters()))


def test_local_training_beats_the_initial_model(site_paths: dict[str, Path]) -> None:
    data = TASK.load_site("cleveland", site_paths["cleveland"])
    model = TASK.build_model(ModelName.LOGREG, seed=0)
    before = evaluate(model, TASK.loss(), data.x_test, data.y_test)
    train_local(model, TASK.loss(), data.x_train, data.y_train, LocalTrainingPlan(10, 8, 0.05, 0))
    after = evaluate(model, TASK.loss(), data.x_test, data.y_test)
    assert after.loss < before.loss
    assert after.accuracy > 0.7


def test_proximal_term_keeps_weights_near_the_global_model(site_paths: dict[str, Path]) -> None:
    data = TASK.load_site("va", site_paths["va"])
    anchor = {k: v.clone() for k, v in TASK.build_model(ModelName.LOGREG, 0).state_dict().items()}
    distances = []
    for mu in (0.0, 10.0):
        model = TASK.build_model(ModelName.LOGREG, seed=0)
        plan = LocalTrainingPlan(epochs=5, batch_size=8, learning_rate=0.05, seed=1, proximal_mu=mu)
        train_local(model, TASK.loss(), data.x_train, data.y_train, plan, global_weights=anchor)
        distances.append(_distance(model, anchor))
    assert distances[1] < 0.5 * distances[0]
