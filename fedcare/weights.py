"""Model weights as Flower ArrayRecords on the wire and safetensors on disk; never pickle."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
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


class UpdateMismatch(ValueError):
    """Arrays that cannot be an update of the global model (names, shapes, dtypes, values)."""


def update_deltas(local: Mapping[str, np.ndarray], reference: ArrayRecord) -> list[np.ndarray]:
    """``local - reference`` per array, in the reference's order, as float64.

    Raises :class:`UpdateMismatch` naming the first array that is missing, misshapen, of another
    dtype or not finite. The coordinator's update validation and a site's SecAgg+ masking apply
    these same rules.
    """
    names = list(reference.keys())
    if list(local) != names:
        raise UpdateMismatch(f"arrays {list(local)} differ from the model's {names}")
    deltas: list[np.ndarray] = []
    for name in names:
        values, expected = local[name], reference[name].numpy()
        if values.shape != expected.shape:
            raise UpdateMismatch(
                f"array {name!r} has shape {values.shape}, expected {expected.shape}"
            )
        if values.dtype != expected.dtype:
            raise UpdateMismatch(
                f"array {name!r} has dtype {values.dtype}, expected {expected.dtype}"
            )
        if not np.isfinite(values).all():
            raise UpdateMismatch(f"array {name!r} holds NaN or Inf")
        deltas.append(values.astype(np.float64) - expected.astype(np.float64))
    return deltas


def l2_norm(arrays: Iterable[np.ndarray]) -> float:
    """The L2 norm of all values of ``arrays`` taken together."""
    return math.sqrt(sum(float(np.sum(a * a)) for a in arrays))
