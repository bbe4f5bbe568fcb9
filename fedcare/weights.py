"""Model weights as Flower ArrayRecords on the wire and safetensors on disk; never pickle."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from flwr.app import ArrayRecord
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from fedcare.atomic import write_bytes_atomic


def to_record(model: nn.Module) -> ArrayRecord:
    """The model's state dict as an ArrayRecord."""
    return ArrayRecord(model.state_dict())


def load_record(model: nn.Module, record: ArrayRecord) -> None:
    """Load ``record`` into ``model``; names and shapes must match exactly."""
    model.load_state_dict(record.to_torch_state_dict(), strict=True)


def save_weights(path: Path, weights: Mapping[str, torch.Tensor]) -> None:
    """Write ``weights`` as a safetensors file, atomically."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}
    write_bytes_atomic(path, save_safetensors_bytes(tensors))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors weights file."""
    return load_safetensors_bytes(path.read_bytes())
