"""SecAgg+ wiring shared by sites and coordinator, on Flower's own protocol.

Flower's SecAgg+ (``SecAggPlusWorkflow`` stages at the coordinator, ``secaggplus_mod`` at each
site) masks what a site sends so that only the sum over sites can be unmasked. What fedcare
masks is a site's *update* (local minus global weights), scaled at the site so that its L2 norm
is at most ``max_update_norm`` before masking. That bound is also Flower's quantisation range,
so the quantiser never clips a value a second time, and an update is as bounded under SecAgg+
as the coordinator's validation bounds it without (where it can see each update).

Flower's legacy record layout (``fitres.*``) is what ``secaggplus_mod`` reads; these helpers
build it with Flower's own converters so the ClientApp keeps one message format of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

from fedcare.config import RunConfig
from fedcare.weights import l2_norm, update_deltas

# Flower's defaults: values quantised to 22 bits, masks drawn modulo 2**32.
QUANTIZATION_RANGE = 2**22
MODULUS_RANGE = 2**32
# Sites weigh 1 each (uniform weighting): Flower's masked weight factor is then exact.
MAX_WEIGHT = 1.0


@dataclass(frozen=True)
class SecAggSettings:
    """Arguments of Flower's ``SecAggPlusWorkflow`` for one run."""

    num_shares: int | float
    reconstruction_threshold: int | float
    clipping_range: float

    @classmethod
    def from_run(cls, run: RunConfig) -> SecAggSettings:
        """Counts (> 1) become ints, fractions stay floats: Flower reads them that way."""
        return cls(
            num_shares=_count_or_fraction(run.secagg_num_shares),
            reconstruction_threshold=_count_or_fraction(run.secagg_threshold),
            clipping_range=run.max_update_norm,
        )

    def workflow_kwargs(self) -> dict[str, int | float]:
        return {
            "num_shares": self.num_shares,
            "reconstruction_threshold": self.reconstruction_threshold,
            "clipping_range": self.clipping_range,
            "max_weight": MAX_WEIGHT,
            "quantization_range": QUANTIZATION_RANGE,
            "modulus_range": MODULUS_RANGE,
        }


def _count_or_fraction(value: float) -> int | float:
    return int(value) if value > 1 else float(value)


@dataclass(frozen=True)
class ClippedUpdate:
    """A site's update, in the global model's array order, scaled to the norm bound."""

    arrays: list[np.ndarray]
    norm: float  # before scaling
    scale: float  # 1.0 when the update was within the bound


def clip_update(
    local: Mapping[str, np.ndarray], global_arrays: ArrayRecord, bound: float
) -> ClippedUpdate:
    """``local - global``, scaled down to L2 norm ``bound`` if it is longer.

    Raises :class:`fedcare.weights.UpdateMismatch` for arrays that are not an update of the
    global model: the site sends nothing rather than mask something broken.
    """
    deltas = update_deltas(local, global_arrays)
    norm = l2_norm(deltas)
    scale = 1.0 if norm <= bound else bound / norm
    return ClippedUpdate([d * scale for d in deltas], norm, scale)


def masking_payload(update: ClippedUpdate, weight: float) -> RecordDict:
    """The ``fitres.*`` records Flower's ``secaggplus_mod`` masks (arrays) and reads (weight)."""
    fitres = FitRes(
        status=Status(code=Code.OK, message="Success"),
        parameters=ndarrays_to_parameters(update.arrays),
        num_examples=int(weight),
        metrics={},
    )
    return compat.fitres_to_recorddict(fitres, keep_input=False)


def apply_mean_update(global_arrays: ArrayRecord, mean_update: list[np.ndarray]) -> ArrayRecord:
    """The new global arrays: each global array plus its (unmasked) mean update."""
    if len(mean_update) != len(global_arrays):
        raise ValueError(f"{len(mean_update)} aggregated arrays for {len(global_arrays)} weights")
    arrays: dict[str, Array] = {}
    for (name, reference), delta in zip(global_arrays.items(), mean_update, strict=True):
        base = reference.numpy()
        updated = base.astype(np.float64) + delta.reshape(base.shape)
        arrays[name] = Array(updated.astype(base.dtype))
    return ArrayRecord(arrays)
