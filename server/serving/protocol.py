"""What gRPC and REST share: turning Open Inference Protocol tensors into the model's columns,
the model metadata, the server's state and the access log.

Both front ends decode a request into ``{input name: 1-D array}`` here, hand it to
:meth:`fedcare.bundle.ReleasedModel.check_inputs` (the one place inputs are validated), and
encode the probabilities the same way, so the two protocols cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcare.bundle import InvalidInput, ReleasedModel
from fedcare.server.serving.keys import ApiKeys

OUTPUT_NAME = "probability"
OUTPUT_DATATYPE = "FP32"
SERVER_NAME = "fedcare"
PLATFORM = "fedcare_pytorch"
# The datatypes an input may arrive as (numbers only), and their little-endian raw layout.
DATATYPES: dict[str, str] = {
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}

_DTYPES = {name: np.dtype(layout) for name, layout in DATATYPES.items()}

access_log = logging.getLogger("fedcare.serve.access")


class NotFound(LookupError):
    """A model name or version this server does not serve."""


class Unauthenticated(PermissionError):
    """No API key, or one that is not in the keys file."""


@dataclass
class ServingState:
    """One served model and the rules every request is checked against."""

    model: ReleasedModel
    keys: ApiKeys
    max_batch: int
    server_version: str
    ready: bool = True
    extensions: tuple[str, ...] = field(default=("binary_tensor_data",))

    def check_model(self, name: str, version: str | None) -> None:
        if name != self.model.name:
            raise NotFound(
                f"model {name!r} is not served here; this server serves {self.model.name!r}"
            )
        if version and version != self.model.version:
            raise NotFound(
                f"model {name!r} version {version!r} is not served here; served: "
                f"{self.model.version!r}"
            )

    def authenticate(self, header: str | None) -> str:
        name: str | None = self.keys.name_of_header(header)
        if name is None:
            reason = "missing" if not header else "not valid"
            raise Unauthenticated(f"API key {reason}; send 'Authorization: Bearer TOKEN'")
        return name

    def metadata(self) -> dict[str, Any]:
        """The model metadata (the v2 protocol's JSON shape; gRPC mirrors it)."""
        return {
            "name": self.model.name,
            "versions": [self.model.version],
            "platform": PLATFORM,
            "inputs": [
                {"name": spec.name, "datatype": spec.datatype, "shape": [-1]}
                for spec in self.model.inputs
            ],
            "outputs": [{"name": OUTPUT_NAME, "datatype": OUTPUT_DATATYPE, "shape": [-1]}],
            "parameters": {
                "task": self.model.task,
                "max_batch": self.max_batch,
                "input_rules": {spec.name: spec.to_json() for spec in self.model.inputs},
            },
        }

    def infer(self, columns: dict[str, np.ndarray], outputs: Iterable[str]) -> np.ndarray:
        """Validate and run one request; raises :class:`InvalidInput` naming the input."""
        for name in outputs:
            if name != OUTPUT_NAME:
                raise InvalidInput(name, f"not an output of this model; outputs: {OUTPUT_NAME}")
        return self.model.predict_proba(columns, self.max_batch)  # checks every input first


def decode_tensor(
    name: str, datatype: str, shape: Iterable[int], values: np.ndarray, max_batch: int
) -> np.ndarray:
    """One input tensor as a 1-D array, after checking its datatype and shape against the data
    it carries; raises :class:`InvalidInput` naming it."""
    if datatype not in DATATYPES:
        raise InvalidInput(
            name, f"datatype {datatype!r} not accepted; use FP32 (or {', '.join(DATATYPES)})"
        )
    dims = list(map(int, shape))
    rows = dims[0] if dims else -1
    if rows < 0 or len(dims) > 2 or (len(dims) == 2 and dims[1] != 1):
        raise InvalidInput(name, f"shape {dims}; expected [n] or [n, 1]")
    if rows > max_batch:
        raise InvalidInput(name, f"batch of {rows} rows exceeds the maximum of {max_batch}")
    if values.size != rows:  # [n] and [n, 1] both hold n values
        raise InvalidInput(name, f"shape {dims} holds {rows} values, got {values.size}")
    return values if values.ndim == 1 else values.reshape(rows)


def decode_raw(
    name: str, datatype: str, shape: Iterable[int], raw: bytes, max_batch: int
) -> np.ndarray:
    """A tensor sent as raw bytes (gRPC ``raw_input_contents``, REST binary extension)."""
    dtype = _DTYPES.get(datatype)
    if dtype is None:
        return decode_tensor(name, datatype, shape, np.zeros(0), max_batch)
    if len(raw) % dtype.itemsize:
        raise InvalidInput(name, f"{len(raw)} bytes is not a whole number of {datatype} values")
    return decode_tensor(name, datatype, shape, np.frombuffer(raw, dtype=dtype), max_batch)


def decode_json(
    name: str, datatype: str, shape: Iterable[int], data: Any, max_batch: int
) -> np.ndarray:
    """A tensor sent as JSON numbers (REST ``data``, flat or nested row-major)."""
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidInput(name, "data is not a rectangular list of numbers") from None
    if values.dtype.kind not in "iuf":
        raise InvalidInput(name, "data must hold numbers only")
    if datatype.startswith(("INT", "UINT")) and values.dtype.kind == "f":
        raise InvalidInput(name, f"datatype {datatype} but the data holds fractions")
    return decode_tensor(name, datatype, shape, values.reshape(-1), max_batch)


def log_access(
    api: str, key: str | None, endpoint: str, status: str, batch: int, started: float
) -> None:
    """One line per request: when, which key (its name, never the token), what, the outcome,
    how many rows and how long. Never a patient value."""
    access_log.info(
        "%s api=%s key=%s endpoint=%s status=%s batch=%d latency_ms=%.2f",
        dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        api,
        key or "-",
        endpoint,
        status,
        batch,
        (time.perf_counter() - started) * 1000.0,
    )
