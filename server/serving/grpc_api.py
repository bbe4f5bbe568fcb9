"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` with grpcio's
asyncio server (``grpc.aio``) on its own event loop, in its own thread.

Every RPC but ServerLive and ServerReady (health probes, which reveal nothing) needs an API key
in the call's metadata (``authorization: Bearer TOKEN``). Inputs may come as typed ``contents``
or as ``raw_input_contents`` (what tritonclient sends); the output is returned raw, FP32.

Each request's work (key check, decoding, validation, the model) is a few hundred microseconds of
CPU, so it runs inline on the loop: no hand-off to a thread pool (which cost a sync grpcio server
about 15 % of its requests/s against KServe's ``grpc.aio`` server).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import numpy as np

from fedcare.bundle import InvalidInput
from fedcare.server.serving import grpc_predict_v2_pb2 as pb
from fedcare.server.serving import grpc_predict_v2_pb2_grpc as pb_grpc
from fedcare.server.serving.protocol import (
    OUTPUT_DATATYPE,
    OUTPUT_NAME,
    SERVER_NAME,
    NotFound,
    ServingState,
    Unauthenticated,
    decode_raw,
    decode_tensor,
    log_access,
)

R = TypeVar("R")
log = logging.getLogger(__name__)
# InferTensorContents field holding each datatype's typed values.
_CONTENTS_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
}
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]  # generated
    """The six RPCs of the protocol, on one :class:`ServingState`."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    async def _call(
        self,
        endpoint: str,
        context: grpc.aio.ServicerContext,
        handler: Callable[[], tuple[R, int]],
        needs_key: bool = True,
    ) -> R:
        started = time.perf_counter()
        key: str | None = None
        batch = 0
        try:
            if needs_key:
                key = self.state.authenticate(_authorization(context))
            result, batch = handler()
        except Unauthenticated as exc:
            code, error = grpc.StatusCode.UNAUTHENTICATED, exc
        except NotFound as exc:
            code, error = grpc.StatusCode.NOT_FOUND, exc
        except InvalidInput as exc:
            code, error = grpc.StatusCode.INVALID_ARGUMENT, exc
        except Exception:  # a bug, never the request's values: say nothing about them
            log.exception("%s failed", endpoint)
            code = grpc.StatusCode.INTERNAL
            error = RuntimeError("internal error; see the server's log")
        else:
            log_access("grpc", key, endpoint, "OK", batch, started)
            return result
        log_access("grpc", key, endpoint, code.name, 0, started)
        await context.abort(code, str(error))
        raise AssertionError("context.abort returned")  # pragma: no cover - it always raises

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call(
            "ServerLive", context, lambda: (pb.ServerLiveResponse(live=True), 0), needs_key=False
        )

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        ready = self.state.ready
        return await self._call(
            "ServerReady", context, lambda: (pb.ServerReadyResponse(ready=ready), 0), False
        )

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def handle() -> tuple[Any, int]:
            self.state.check_model(request.name, request.version)
            return pb.ModelReadyResponse(ready=self.state.ready), 0

        return await self._call("ModelReady", context, handle)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        reply = pb.ServerMetadataResponse(
            name=SERVER_NAME,
            version=self.state.server_version,
            extensions=list(self.state.extensions),
        )
        return await self._call("ServerMetadata", context, lambda: (reply, 0))

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def handle() -> tuple[Any, int]:
            self.state.check_model(request.name, request.version)
            meta = self.state.metadata()
            reply = pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"]
            )
            for tensor in meta["inputs"]:
                reply.inputs.add(**tensor)
            for tensor in meta["outputs"]:
                reply.outputs.add(**tensor)
            return reply, 0

        return await self._call("ModelMetadata", context, handle)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def handle() -> tuple[Any, int]:
            self.state.check_model(request.model_name, request.model_version)
            columns = _columns(request, self.state.max_batch)
            probability = self.state.infer(columns, [o.name for o in request.outputs])
            reply = pb.ModelInferResponse(
                model_name=self.state.model.name,
                model_version=self.state.model.version,
                id=request.id,
            )
            reply.outputs.add(name=OUTPUT_NAME, datatype=OUTPUT_DATATYPE, shape=[len(probability)])
            reply.raw_output_contents.append(probability.astype("<f4").tobytes())
            return reply, len(probability)

        return await self._call("ModelInfer", context, handle)


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The call's ``authorization`` metadata (the first one), or None."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def _columns(request: Any, max_batch: int) -> dict[str, np.ndarray]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            request.inputs[0].name if request.inputs else "-",
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one each",
        )
    columns: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in columns:
            raise InvalidInput(tensor.name, "sent twice")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(tensor.name, "both contents and raw_input_contents; send one")
            columns[tensor.name] = decode_raw(
                tensor.name, tensor.datatype, tensor.shape, raw[i], max_batch
            )
            continue
        field = _CONTENTS_FIELD.get(tensor.datatype)
        values = np.asarray(getattr(tensor.contents, field)) if field else np.zeros(0)
        columns[tensor.name] = decode_tensor(
            tensor.name, tensor.datatype, tensor.shape, values, max_batch
        )
    return columns


class GrpcServer:
    """A ``grpc.aio`` server running on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server: grpc.aio.Server | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, name="fedcare-grpc")
        self.thread.daemon = True

    def stop(self, grace: float) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds), then end the loop's thread."""
        if self.server is not None and self.thread.is_alive():
            stopping = asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop)
            stopping.result(timeout=grace + 10)
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


def start_grpc(
    state: ServingState,
    host: str,
    port: int,
    certificate: bytes,
    private_key: bytes,
) -> tuple[GrpcServer, int]:
    """Start the TLS gRPC server on ``host:port`` (0: any free port); returns it and its port."""

    async def start() -> int:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)
        credentials = grpc.ssl_server_credentials([(private_key, certificate)])
        bound = server.add_secure_port(f"{host}:{port}", credentials)
        if bound == 0:
            raise OSError(f"cannot listen on {host}:{port} for gRPC (in use?)")
        await server.start()
        running.server = server
        return int(bound)

    running = GrpcServer()
    running.thread.start()
    try:
        bound = asyncio.run_coroutine_threadsafe(start(), running.loop).result(timeout=30)
    except BaseException:
        running.stop(grace=0)
        raise
    return running, bound
