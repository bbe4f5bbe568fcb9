"""The coordinator's front door: the only thing on the network, and it serves the Fleet API only.

Why it exists: Flower 1.41's SuperLink serves its Fleet API (what SuperNodes use), its Control API
(``flwr run``, ``flwr ls``, ``flwr supernode register``) and its Runtime API (what ServerApp
processes use) on one HTTP port, and Control API authentication is a Flower Enterprise feature.
Every hospital holds ``ca.crt``, so a SuperLink port that faces the sites would let any of them
submit code to the coordinator host. Flower offers no supported way to split the APIs onto
separate ports in this version (``--fleet-api-address`` and ``--control-api-address`` are
deprecated no-ops), so fedcare binds the SuperLink to loopback and puts this reverse proxy in front
of it.

What it forwards: exactly :data:`FLEET_ROUTES` (``POST``, the paths Flower's own SuperNode client
calls) and ``GET /health``; the request body (protobuf) and every end-to-end header (Flower's node
authentication signature, its version headers) pass through unchanged, only hop-by-hop headers are
dropped. Anything else gets ``403`` and one line saying why, and never reaches the SuperLink. The
sites' TLS ends here (the coordinator's certificate); the hop to the SuperLink is TLS again on
loopback, verified against the federation's CA. Built on Starlette, uvicorn and httpx (already
Flower's own dependencies), not on a hand-written HTTP parser.

An operator who prefers their own reverse proxy uses the same allow-list: README "Trust model"
shows it as an nginx rule, and a test keeps that rule and :data:`FLEET_ROUTES` equal.
"""

from __future__ import annotations

import argparse
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

log = logging.getLogger("fedcare.coordinator.frontdoor")

FLEET_PREFIX: Final = "/v1/fleet/"
FLEET_ROUTES: Final = frozenset(
    FLEET_PREFIX + name
    for name in (
        "register-node",
        "activate-node",
        "deactivate-node",
        "unregister-node",
        "send-node-heartbeat",
        "pull-messages",
        "push-messages",
        "get-run",
        "get-fab",
        "push-object",
        "pull-object",
        "confirm-message-received",
    )
)
HEALTH_ROUTE: Final = "/health"
REFUSAL: Final = (
    "fedcare front door: only Flower's Fleet API (SuperNode traffic) is served here; "
    "the Control API is available on the coordinator host only (see README, Trust model)\n"
)
# RFC 9110 section 7.6.1: connection-specific headers are not forwarded by a proxy.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
UPSTREAM_TIMEOUT_S: Final = 300.0


def is_allowed(method: str, path: str) -> bool:
    """Whether the front door forwards ``method path`` (the whole policy, in one place)."""
    if path == HEALTH_ROUTE:
        return method == "GET"
    return method == "POST" and path in FLEET_ROUTES


def _end_to_end(headers: httpx.Headers | list[tuple[str, str]]) -> list[tuple[str, str]]:
    items = headers.multi_items() if isinstance(headers, httpx.Headers) else headers
    return [(name, value) for name, value in items if name.lower() not in HOP_BY_HOP]


def build_app(upstream: str, ca_cert: Path) -> Starlette:
    """The ASGI app: forwards allowed requests to ``https://{upstream}`` (the loopback SuperLink),
    verifying its certificate against ``ca_cert``."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    client = httpx.AsyncClient(
        base_url=f"https://{upstream}", verify=context, timeout=UPSTREAM_TIMEOUT_S
    )

    async def forward(request: Request) -> Response:
        path = request.url.path  # percent-decoded: what is checked is what is forwarded
        if not is_allowed(request.method, path):
            log.warning("refused %s %s from %s", request.method, path, _peer(request))
            return PlainTextResponse(REFUSAL, status_code=403)
        headers = _end_to_end(list(request.headers.items()))
        outbound = client.build_request(
            request.method, path, content=await request.body(), headers=headers
        )
        try:
            reply = await client.send(outbound, stream=True)
            try:  # raw bytes: the body leaves exactly as the SuperLink wrote it (no re-encoding)
                body = b"".join([chunk async for chunk in reply.aiter_raw()])
            finally:
                await reply.aclose()
        except httpx.HTTPError as exc:
            log.error("SuperLink at %s unreachable: %s", upstream, type(exc).__name__)
            return PlainTextResponse("fedcare front door: coordinator unavailable\n", 502)
        return Response(body, reply.status_code, headers=dict(_end_to_end(reply.headers)))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    routes = [Route("/{path:path}", forward, methods=methods)]
    return Starlette(routes=routes, lifespan=lifespan)


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def serve(
    listen_host: str, listen_port: int, upstream: str, certfile: Path, keyfile: Path, ca: Path
) -> None:
    """Serve the front door over TLS until terminated (``coordinator stop``)."""
    import uvicorn

    uvicorn.run(
        build_app(upstream, ca),
        host=listen_host,
        port=listen_port,
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        log_level="warning",
        access_log=False,
        server_header=False,
    )


def main() -> None:
    """``python -m fedcare.server.frontdoor``: started by ``fedcare coordinator start``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="address the sites connect to")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the SuperLink on loopback, HOST:PORT")
    parser.add_argument("--certfile", type=Path, required=True)
    parser.add_argument("--keyfile", type=Path, required=True)
    parser.add_argument("--ca", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    serve(args.host, args.port, args.upstream, args.certfile, args.keyfile, args.ca)


if __name__ == "__main__":
    main()
