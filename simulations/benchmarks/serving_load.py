"""The load generator of ``fedcare bench serve``: the same client code for every server.

Run as its own process (so that neither server shares a process, or the protocol buffer
registry, with it)::

    python -m fedcare.simulations.benchmarks.serving_load PLAN.json RESULTS.json

``PLAN.json`` lists cells, run one after the other in the order given. A cell is one server, one
protocol, one concurrency and one fixed request: ``concurrency`` closed-loop workers on one
event loop, each sending the request and awaiting its reply back to back, over one gRPC channel
(``grpc.aio``, HTTP/2 streams multiplexed, as a gRPC client normally is) or over one aiohttp
session holding up to ``concurrency`` keep-alive connections (REST). The Open Inference Protocol
messages come from KServe's generated ``inference.GRPCInferenceService`` stubs (the protocol's
own ``grpc_predict_v2.proto``) and its JSON form; gRPC inputs travel in ``raw_input_contents``
as tritonclient sends them. The first ``warmup_s`` seconds of a cell are not counted; then every
reply that completes within the next ``seconds`` counts, its latency from send to full reply.
Any refused request stops the cell with the server's message: a benchmark of errors measures
nothing.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


class LoadError(RuntimeError):
    """A server refused or failed a request during a cell."""


def _tls_context(cell: dict[str, Any]) -> ssl.SSLContext | None:
    ca = cell.get("tls_ca")
    return None if ca is None else ssl.create_default_context(cafile=ca)


def _rest_sender(cell: dict[str, Any]) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Any]]:
    import aiohttp

    scheme = "https" if cell.get("tls_ca") else "http"
    url = f"{scheme}://{cell['host']}:{cell['port']}/v2/models/{cell['model']}/infer"
    body = json.dumps({"inputs": cell["inputs"]}).encode()
    headers = {"Content-Type": "application/json"}
    if cell.get("api_key"):
        headers["Authorization"] = f"Bearer {cell['api_key']}"
    connector = aiohttp.TCPConnector(limit=cell["concurrency"], ssl=_tls_context(cell) or False)
    session = aiohttp.ClientSession(connector=connector)
    server_hostname = cell.get("server_name")

    async def send() -> Any:
        async with session.post(
            url, data=body, headers=headers, server_hostname=server_hostname
        ) as response:
            payload = await response.read()
            if response.status != 200:
                raise LoadError(f"REST {response.status}: {payload[:300]!r}")
            return payload

    return send, session.close


def _rest_probabilities(payload: bytes) -> list[float]:
    output = json.loads(payload)["outputs"][0]
    return [float(v) for v in output["data"]]


def _grpc_request(cell: dict[str, Any]) -> Any:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=cell["model"])
    for item in cell["inputs"]:
        request.inputs.append(
            pb.ModelInferRequest.InferInputTensor(
                name=item["name"], datatype=item["datatype"], shape=item["shape"]
            )
        )
        values = np.asarray(item["data"], dtype=DTYPES[item["datatype"]])
        request.raw_input_contents.append(values.tobytes())
    return request


def _grpc_sender(cell: dict[str, Any]) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Any]]:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    target = f"{cell['host']}:{cell['port']}"
    if cell.get("tls_ca"):
        credentials = grpc.ssl_channel_credentials(Path(cell["tls_ca"]).read_bytes())
        options = []
        if cell.get("server_name"):
            options.append(("grpc.ssl_target_name_override", cell["server_name"]))
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.aio.insecure_channel(target)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    request = _grpc_request(cell)
    metadata = (("authorization", f"Bearer {cell['api_key']}"),) if cell.get("api_key") else None

    async def send() -> Any:
        try:
            return await stub.ModelInfer(request, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise LoadError(f"gRPC {error.code().name}: {error.details()}") from None

    return send, channel.close


def _grpc_probabilities(reply: Any) -> list[float]:
    if reply.raw_output_contents:
        dtype = DTYPES[reply.outputs[0].datatype]
        return [float(v) for v in np.frombuffer(reply.raw_output_contents[0], dtype=dtype)]
    contents = reply.outputs[0].contents
    return [float(v) for v in (contents.fp32_contents or contents.fp64_contents)]


async def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Requests/s and latency percentiles of one cell (see the module docstring)."""
    rest = cell["protocol"] == "rest"
    send, close = _rest_sender(cell) if rest else _grpc_sender(cell)
    latencies: list[float] = []

    async def worker() -> None:
        while True:
            sent = time.perf_counter()
            await send()
            done = time.perf_counter()
            if counted_from <= done <= until:
                latencies.append(done - sent)
            if done >= until:
                return

    try:
        first = await send()  # connects, and shows the reply is a probability per row
        probabilities = _rest_probabilities(first) if rest else _grpc_probabilities(first)
        counted_from = time.perf_counter() + float(cell["warmup_s"])
        until = counted_from + float(cell["seconds"])
        await asyncio.gather(*(worker() for _ in range(int(cell["concurrency"]))))
    finally:
        await close()
    if not latencies:
        raise LoadError(f"cell {cell['id']}: no reply completed within {cell['seconds']} s")
    ms = np.asarray(latencies) * 1000.0
    return {
        "id": cell["id"],
        "requests": len(latencies),
        "requests_per_s": len(latencies) / float(cell["seconds"]),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "probabilities": probabilities,
    }


async def run_plan(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [await run_cell(cell) for cell in cells]


def main() -> None:
    plan, results = Path(sys.argv[1]), Path(sys.argv[2])
    cells = json.loads(plan.read_text())["cells"]
    try:
        measured = asyncio.run(run_plan(cells))
    except LoadError as error:
        print(f"load generator: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    results.write_text(json.dumps({"cells": measured}))


if __name__ == "__main__":
    main()
