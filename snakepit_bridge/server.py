"""The gRPC worker process: bind, announce readiness, serve, shut down in stages.

Shutdown (SIGTERM, SIGINT, EOF on a piped stdin, or the parent dying):

1. health goes NOT_SERVING and new calls are refused;
2. every open stream ends with a final chunk saying the worker is shutting down;
3. in-flight unary calls get ``config.grace_period`` seconds to finish;
4. sessions are closed (their close hooks run) and the process exits 0.

A second signal during shutdown exits at once with :data:`ExitCode.FORCED`.
"""
from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ._proto import snakepit_pb2_grpc as pb_grpc
from .config import Config
from .dispatch import Dispatcher
from .exitcodes import ExitCode
from .logging import get_logger
from .registry import Registry
from .transports.grpc import SERVICE_NAME, BridgeServicer

__all__ = ["PortInUse", "serve", "READY_PREFIX"]

READY_PREFIX = "GRPC_SERVER_READY_ON_PORT="


class PortInUse(Exception):
    """--strict-port was given and the port is taken."""


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _server_options(config: Config) -> list[tuple[str, Any]]:
    limit = config.max_message_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # gRPC enables SO_REUSEPORT by default, which lets two workers that drew
        # the same random port both bind it and silently split its traffic.
        ("grpc.so_reuseport", 0),
    ]


def bind(server: grpc.aio.Server, config: Config, log: Any) -> int:
    """Bind ``config.port`` (0 = any free port); when it is taken, bind a free
    one and warn, or raise :class:`PortInUse` with ``--strict-port``."""
    credentials = _credentials(config)

    def add(port: int) -> int:
        address = _address(config.host, port)
        try:
            if credentials is None:
                return server.add_insecure_port(address)
            return server.add_secure_port(address, credentials)
        except RuntimeError:
            return 0

    bound = add(config.port)
    if bound:
        return bound
    if config.strict_port or config.port == 0:
        raise PortInUse(f"cannot bind {_address(config.host, config.port)}: the port is in use or not available")
    bound = add(0)
    if not bound:
        raise PortInUse(f"cannot bind any port on {config.host!r}")
    log.warning("requested port in use; bound another and reporting it in the ready line",
                requested=config.port, bound=bound)
    return bound


def _credentials(config: Config) -> grpc.ServerCredentials | None:
    if not config.tls_cert:
        return None
    with open(config.tls_cert, "rb") as f:
        cert = f.read()
    with open(config.tls_key, "rb") as f:  # type: ignore[arg-type]
        key = f.read()
    ca = None
    if config.tls_client_ca:
        with open(config.tls_client_ca, "rb") as f:
            ca = f.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def announce(port: int) -> None:
    """The ready line: the one thing gRPC mode ever writes to stdout."""
    sys.stdout.write(f"{READY_PREFIX}{port}\n")
    sys.stdout.flush()


async def serve(config: Config, registry: Registry) -> ExitCode:
    """Run the gRPC worker until it is told to stop; returns the exit code."""
    log = get_logger("snakepit_bridge.server")
    dispatcher = Dispatcher(registry, config)
    interceptors = []
    if config.auth_token:
        from .auth import TokenInterceptor

        interceptors.append(TokenInterceptor(config.auth_token))
    server = grpc.aio.server(options=_server_options(config), interceptors=interceptors)
    generators = None
    try:
        from .generators import GeneratorStore

        generators = GeneratorStore(dispatcher, config)
    except ImportError:
        pass
    servicer = BridgeServicer(dispatcher, generators)
    pb_grpc.add_SnakepitBridgeServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    port = bind(server, config, log)
    await server.start()
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    if generators is not None and hasattr(generators, "start"):
        generators.start()

    stop = asyncio.Event()
    reason: list[str] = []
    loop = asyncio.get_running_loop()

    def request_stop(why: str) -> None:
        if stop.is_set():
            if why.startswith("signal"):
                log.warning("second signal during shutdown; exiting now", reason=why)
                os._exit(ExitCode.FORCED)
            return
        reason.append(why)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, f"signal {sig.name}")
    watcher = _watch_stdin(loop, request_stop) if config.watch_stdin else None

    announce(port)
    log.info("ready", port=port, host=config.host, pid=os.getpid(), commands=len(registry))
    await stop.wait()

    log.info("shutting down", reason=reason[0], grace_s=config.grace_period)
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    streams = dispatcher.interrupt_streams()
    await server.stop(config.grace_period)
    if generators is not None and hasattr(generators, "aclose"):
        await generators.aclose()
    await dispatcher.aclose()
    if watcher is not None:
        watcher()
    log.info("stopped", open_streams_closed=streams)
    return ExitCode.OK


async def _set_health(servicer: Any, status: int) -> None:
    for name in ("", SERVICE_NAME):
        result = servicer.set(name, status)
        if asyncio.iscoroutine(result):
            await result


def _watch_stdin(loop: asyncio.AbstractEventLoop, request_stop: Any):
    """When stdin is a pipe (the pool holds its other end), EOF means the pool
    is gone. A terminal or /dev/null is not watched. Returns an unwatch function."""
    try:
        fd = sys.stdin.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
    except (OSError, ValueError, AttributeError):
        return None

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            request_stop("stdin closed")

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    return lambda: loop.remove_reader(fd)
