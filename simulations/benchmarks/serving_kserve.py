"""The reference row of ``fedcare bench serve``: KServe's own Python ``ModelServer``, as KServe
ships it, serving the same released model.

Run as its own process::

    python -m fedcare.simulations.benchmarks.serving_kserve --bundle B --key K \\
        --http_port P --grpc_port Q

Everything but the model is KServe's: ``kserve.ModelServer()`` with the defaults of its own
command line (one uvicorn worker, gRPC on ``grpc.aio`` with 4 threads, per-request latency
logging on, no TLS, no authentication); only ``--http_port`` / ``--grpc_port`` (KServe's own
arguments, default 8080 / 8081) move to free ports. The model is a ``kserve.Model`` whose
``predict`` decodes the Open Inference Protocol inputs into one column per named input and calls
the same :meth:`fedcare.bundle.ReleasedModel.predict_proba` (which checks every input against the
task schema, then encodes, standardises and runs the model) as ``fedcare serve`` does on the same
request, so the rows differ by the server alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Protocol

import numpy as np

OUTPUT = "probability"


class Predictor(Protocol):
    """What the KServe model needs of a released model (:class:`fedcare.bundle.ReleasedModel`)."""

    @property
    def name(self) -> str: ...

    def predict_proba(self, columns: dict[str, np.ndarray]) -> np.ndarray: ...


def kserve_model(released: Predictor) -> Any:
    """A ``kserve.Model`` named like the release, predicting with it."""
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse
    from kserve.utils.utils import generate_uuid

    class ReleasedKServeModel(kserve.Model):  # type: ignore[misc]
        """KServe's documented custom-model pattern: load in ``load``, infer in ``predict``."""

        def __init__(self) -> None:
            super().__init__(released.name)
            self.load()

        def load(self) -> bool:
            self.ready = True
            return True

        def predict(
            self, payload: InferRequest, headers: dict[str, str] | None = None
        ) -> InferResponse:
            columns = {item.name: item.as_numpy().reshape(-1) for item in payload.inputs}
            probability = np.asarray(released.predict_proba(columns), dtype=np.float32)
            output = InferOutput(name=OUTPUT, shape=list(probability.shape), datatype="FP32")
            output.set_data_from_numpy(probability, binary_data=payload.from_grpc)
            return InferResponse(
                model_name=self.name,
                infer_outputs=[output],
                response_id=payload.id or generate_uuid(),  # as KServe's own servers do
                from_grpc=payload.from_grpc,
            )

    return ReleasedKServeModel()


def load_released(bundle: Path, public_key: Path) -> Predictor:
    """The signed release, verified exactly as ``fedcare serve`` loads it."""
    from fedcare.bundle import load_bundle

    released: Predictor = load_bundle(bundle, public_key)
    return released


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    # KServe parses sys.argv itself when kserve.model_server is imported (--http_port, ...).
    ours, _ = parser.parse_known_args()
    released = load_released(ours.bundle, ours.key)
    import kserve

    kserve.ModelServer().start([kserve_model(released)])


if __name__ == "__main__":
    main()
