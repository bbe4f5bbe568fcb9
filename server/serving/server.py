"""Start (and stop) both front ends of ``fedcare serve`` on one verified bundle."""

from __future__ import annotations

import signal
import socket
import threading
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any

from fedcare.bundle import load_bundle
from fedcare.errors import ConfigError
from fedcare.server.serving.grpc_api import GrpcServer, start_grpc
from fedcare.server.serving.keys import read_keys
from fedcare.server.serving.protocol import ServingState
from fedcare.server.serving.rest_api import build_app

DEFAULT_MAX_BATCH = 1024


def _stoppable_server(config: Any) -> Any:
    """A uvicorn server that ends on SIGINT/SIGTERM by returning, so ``fedcare serve`` stops its
    gRPC server too and exits 0 (uvicorn itself re-raises the signal after its shutdown, which
    kills the process before anything after ``run`` can happen)."""
    import uvicorn

    class StopOnSignal(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: do not wait for open connections
            self.should_exit = True

    return StopOnSignal(config)


@dataclass
class Serving:
    """A running server: its addresses, and how to stop it."""

    state: ServingState
    host: str
    grpc_port: int
    http_port: int
    grpc_server: GrpcServer
    http_server: Any  # uvicorn.Server
    http_socket: socket.socket
    http_thread: threading.Thread | None = None

    @property
    def grpc_address(self) -> str:
        return f"{_host(self.host)}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"https://{_host(self.host)}:{self.http_port}"

    def serve_forever(self) -> None:
        """Run the REST server in this thread until SIGINT/SIGTERM, then stop both."""
        try:
            self.http_server.run(sockets=[self.http_socket])
        finally:
            self.grpc_server.stop(grace=2)

    def start_background(self) -> None:
        """Run the REST server in a thread (tests, embedding); :meth:`stop` ends both."""
        self.http_thread = threading.Thread(
            target=self.http_server.run,
            kwargs={"sockets": [self.http_socket]},
            name="fedcare-rest",
            daemon=True,
        )
        self.http_thread.start()
        while not self.http_server.started and self.http_thread.is_alive():
            threading.Event().wait(0.02)

    def stop(self) -> None:
        self.http_server.should_exit = True
        if self.http_thread is not None:
            self.http_thread.join(timeout=10)
        self.grpc_server.stop(grace=1)
        self.http_socket.close()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def prepare(
    bundle: Path,
    public_key: Path,
    keys_file: Path,
    tls_cert: Path,
    tls_key: Path,
    host: str = "127.0.0.1",
    grpc_port: int = 8081,
    http_port: int = 8080,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Serving:
    """Verify and load the bundle, read the keys and TLS files, bind both ports and start gRPC.

    Refuses (:class:`fedcare.bundle.BundleError` / :class:`ConfigError`, one line) before any
    port is opened when the bundle is unsigned, tampered with or signed by another key."""
    import uvicorn

    if max_batch < 1:
        raise ConfigError(f"--max-batch {max_batch}: must be at least 1")
    model = load_bundle(bundle, public_key)
    keys = read_keys(keys_file)
    if not keys.hashes:
        raise ConfigError(f"{keys_file}: holds no API key; add one with 'fedcare serve add-key'")
    try:
        certificate, private_key = tls_cert.read_bytes(), tls_key.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{exc.filename}: cannot read the TLS file ({exc.strerror})") from None
    state = ServingState(model, keys, max_batch, _fedcare_version())
    try:
        http_socket = socket.create_server((host, http_port), reuse_port=False)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{http_port} for REST ({exc.strerror})"
        ) from None
    try:
        grpc_server, bound = start_grpc(state, host, grpc_port, certificate, private_key)
    except (OSError, RuntimeError) as exc:
        http_socket.close()
        raise ConfigError(f"{exc}; pick another --grpc-port") from None
    config = uvicorn.Config(
        build_app(state),
        ssl_certfile=str(tls_cert),
        ssl_keyfile=str(tls_key),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,  # keep-alive clients must not hold a stop for long
    )
    return Serving(
        state,
        host,
        bound,
        http_socket.getsockname()[1],
        grpc_server,
        _stoppable_server(config),
        http_socket,
    )


def _fedcare_version() -> str:
    try:
        return version("fedcare")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without install
        return "0"
