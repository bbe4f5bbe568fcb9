"""What a site may send, and how weights travel and rest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedcare import messages as keys
from fedcare.tasks import ModelName, get_task
from fedcare.weights import load_record, read_weights, save_weights, to_record


@pytest.mark.parametrize(
    ("count", "expected"), [(0, 10.0), (4, 10.0), (30, 30.0), (85, 80.0), (199, 200.0)]
)
def test_counts_leave_a_site_only_bucketed(count: int, expected: float) -> None:
    assert keys.bucket_count(count) == expected


def test_negative_count_is_a_bug() -> None:
    with pytest.raises(ValueError):
        keys.bucket_count(-1)


def test_allow_list_is_exactly_the_metric_keys() -> None:
    expected = {keys.TRAIN_LOSS, keys.EVAL_LOSS, keys.EVAL_ACCURACY, keys.EVAL_AUROC}
    assert expected | {keys.WEIGHT, keys.EPSILON} == keys.ALLOWED_METRICS


def test_array_record_and_safetensors_round_trip(tmp_path: Path) -> None:
    task = get_task("heart-disease")
    source = task.build_model(ModelName.MLP, seed=1)
    target = task.build_model(ModelName.MLP, seed=2)
    load_record(target, to_record(source))
    path = tmp_path / "w.safetensors"
    save_weights(path, target.state_dict())
    restored = read_weights(path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(restored[name], tensor)
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_record_refuses_wrong_shapes() -> None:
    task = get_task("heart-disease")
    with pytest.raises(RuntimeError):
        load_record(
            task.build_model(ModelName.LOGREG, 0), to_record(task.build_model(ModelName.MLP, 0))
        )
