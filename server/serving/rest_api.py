"""The Open Inference Protocol over HTTP/REST (the v2 endpoints), with Starlette.

``GET /v2/health/live`` and ``/v2/health/ready`` are open (probes; they reveal nothing); every
other endpoint needs ``Authorization: Bearer TOKEN``. Request tensors come as JSON ``data`` or,
as tritonclient sends them by default, in the binary tensor extension (a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors); the output is returned
the way the request asks for it (binary when ``binary_data`` is requested, else JSON).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fedcare.bundle import InvalidInput
from fedcare.server.serving.protocol import (
    OUTPUT_DATATYPE,
    OUTPUT_NAME,
    SERVER_NAME,
    NotFound,
    ServingState,
    Unauthenticated,
    decode_json,
    decode_raw,
    log_access,
)

log = logging.getLogger(__name__)
HEADER_LENGTH = "inference-header-content-length"
MAX_BODY_BYTES = 16 * 1024 * 1024
Handler = Callable[[Request], Awaitable[tuple[Response, int]]]


class BadRequest(ValueError):
    """A body that is not a v2 inference request at all (not JSON, wrong shape)."""


def build_app(state: ServingState) -> Starlette:
    """The ASGI app serving ``state``'s model."""

    def endpoint(name: str, handler: Handler, needs_key: bool = True) -> Callable[..., Any]:
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            key: str | None = None
            try:
                if needs_key:
                    key = state.authenticate(request.headers.get("authorization"))
                response, batch = await handler(request)
            except Unauthenticated as exc:
                return _error(name, key, started, 401, str(exc), {"WWW-Authenticate": "Bearer"})
            except NotFound as exc:
                return _error(name, key, started, 404, str(exc))
            except (InvalidInput, BadRequest) as exc:
                return _error(name, key, started, 400, str(exc))
            except Exception:  # a bug, never the request's values: say nothing about them
                log.exception("%s failed", name)
                return _error(name, key, started, 500, "internal error; see the server's log")
            log_access("rest", key, name, str(response.status_code), batch, started)
            return response

        return run

    async def live(_: Request) -> tuple[Response, int]:
        return JSONResponse({"live": True}), 0

    async def ready(_: Request) -> tuple[Response, int]:
        return JSONResponse({"ready": state.ready}, 200 if state.ready else 503), 0

    async def server_metadata(_: Request) -> tuple[Response, int]:
        meta = {"name": SERVER_NAME, "version": state.server_version}
        return JSONResponse({**meta, "extensions": list(state.extensions)}), 0

    async def model_metadata(request: Request) -> tuple[Response, int]:
        _check(state, request)
        return JSONResponse(state.metadata()), 0

    async def model_ready(request: Request) -> tuple[Response, int]:
        _check(state, request)
        return JSONResponse({"name": state.model.name, "ready": state.ready}), 0

    async def infer(request: Request) -> tuple[Response, int]:
        _check(state, request)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(f"request body over {MAX_BODY_BYTES} bytes")
        header, binary = _split(body, request.headers.get(HEADER_LENGTH))
        columns = _columns(header, binary, state.max_batch)
        outputs = header.get("outputs") or []
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise BadRequest("'outputs' must be a list of objects")
        probability = state.infer(columns, [str(o.get("name")) for o in outputs])
        reply: dict[str, Any] = {
            "model_name": state.model.name,
            "model_version": state.model.version,
        }
        if "id" in header:
            reply["id"] = header["id"]
        output: dict[str, Any] = {
            "name": OUTPUT_NAME,
            "datatype": OUTPUT_DATATYPE,
            "shape": [len(probability)],
        }
        if _wants_binary(header, outputs):
            raw = probability.astype("<f4").tobytes()
            output["parameters"] = {"binary_data_size": len(raw)}
            reply["outputs"] = [output]
            head = json.dumps(reply).encode()
            response: Response = Response(
                head + raw,
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(len(head))},
            )
        else:
            output["data"] = [float(p) for p in probability]
            reply["outputs"] = [output]
            response = JSONResponse(reply)
        return response, len(probability)

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", endpoint("health/live", live, False), methods=["GET"]),
        Route("/v2/health/ready", endpoint("health/ready", ready, False), methods=["GET"]),
        Route("/v2", endpoint("metadata", server_metadata), methods=["GET"]),
    ]
    for prefix in (model, versioned):
        routes += [
            Route(prefix, endpoint("model/metadata", model_metadata), methods=["GET"]),
            Route(f"{prefix}/ready", endpoint("model/ready", model_ready), methods=["GET"]),
            Route(f"{prefix}/infer", endpoint("model/infer", infer), methods=["POST"]),
        ]
    return Starlette(routes=routes)


def _error(
    name: str,
    key: str | None,
    started: float,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    log_access("rest", key, name, str(status), 0, started)
    return JSONResponse({"error": message}, status, headers=headers)


def _check(state: ServingState, request: Request) -> None:
    state.check_model(request.path_params["name"], request.path_params.get("version"))


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        head, binary = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length is not a number") from None
        if not 0 <= size <= len(body):
            raise BadRequest("Inference-Header-Content-Length exceeds the body")
        head, binary = body[:size], body[size:]
    try:
        header = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("the body is not a JSON inference request") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise BadRequest("the request needs an 'inputs' list")
    return header, binary


def _columns(header: dict[str, Any], binary: bytes, max_batch: int) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in header["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise BadRequest("each input needs a 'name'")
        name = tensor["name"]
        if name in columns:
            raise InvalidInput(name, "sent twice")
        datatype, shape = tensor.get("datatype"), tensor.get("shape")
        if not isinstance(datatype, str):
            raise InvalidInput(name, "needs a 'datatype'")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape
        ):
            raise InvalidInput(name, "needs a 'shape' list of integers")
        parameters = tensor.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(name, "binary_data_size runs past the request body")
            columns[name] = decode_raw(
                name, datatype, shape, binary[offset : offset + size], max_batch
            )
            offset += size
        elif "data" in tensor:
            columns[name] = decode_json(name, datatype, shape, tensor["data"], max_batch)
        else:
            raise InvalidInput(name, "no 'data' and no binary_data_size")
    return columns


def _wants_binary(header: dict[str, Any], outputs: list[dict[str, Any]]) -> bool:
    parameters = header.get("parameters") or {}
    if isinstance(parameters, dict) and parameters.get("binary_data_output") is True:
        return True
    return any((o.get("parameters") or {}).get("binary_data") is True for o in outputs)
