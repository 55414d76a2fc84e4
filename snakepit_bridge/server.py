"""The gRPC worker process: bind, announce readiness, serve, shut down in stages.

Shutdown (SIGTERM, SIGINT, EOF on a piped stdin, or the parent dying):

1. health (grpc.health.v1) goes NOT_SERVING, the server stops accepting calls;
2. every open stream ends with a final chunk whose error says the worker is
   shutting down;
3. in-flight unary calls get ``config.grace_period`` seconds (default 1.5, under
   the pool's 2 s before SIGKILL) to finish, then are cancelled; when the pool
   is gone (stdin EOF, parent died) the grace is PARENT_GONE_GRACE instead;
4. sessions are closed (their close hooks run), child processes a handler
   started are terminated (SIGTERM, then SIGKILL), and the process exits 0
   through ``os._exit`` so that a thread blocked in a handler cannot hang it.

A watchdog ends the process ``SHUTDOWN_MARGIN`` seconds after the grace period
whatever is still running (the reaper process, :mod:`snakepit_bridge._reaper`,
kills it shortly after if even that cannot run), and a second SIGTERM/SIGINT exits at once with
:data:`ExitCode.FORCED`. Signals use plain signal handlers and the stdin and
parent watchers are threads, so all of this works even while a handler blocks
the event loop. Calls still running when the grace ends are cancelled by gRPC
(the client sees UNAVAILABLE "Cancelling all calls").

Orphans: with a piped stdin (as a pool starts it), EOF on stdin means the pool
is gone. A terminal or /dev/null stdin is not watched, so ``make run`` and CI
keep working. Second line: Linux's parent-death signal plus a poll of the
parent pid (see :func:`snakepit_bridge._lifecycle.watch_parent`). ``--no-parent-watch`` turns both off.
Child processes are found by walking /proc (Linux; see
:func:`snakepit_bridge._proc.terminate_descendants` for what that cannot reach).

Ports: SO_REUSEPORT is off, so two processes can never share a port. When
``--port`` is taken the default is to bind another free port, warn, and report
it in the ready line: a Snakepit pool draws ports at random and connects to the
port in the ready line (CONTRACT §1), so a collision costs nothing, whereas
exiting would fail the worker start and make the pool retry. ``--strict-port``
exits with :data:`ExitCode.PORT_IN_USE` instead, for deployments where the port
is fixed and a different one would be unreachable.
"""
from __future__ import annotations

import asyncio
import errno
import gc
import itertools
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from ._lifecycle import PARENT_GONE_GRACE, SHUTDOWN_MARGIN, shutdown_switch_interval
from ._lifecycle import say as _say
from ._lifecycle import watch_parent as _watch_parent
from ._proc import flush_and_exit, kill_descendants, terminate_descendants
from ._proto import snakepit_pb2_grpc as pb_grpc
from ._services import StandardServices
from .config import Config
from .dispatch import Dispatcher
from .exitcodes import ExitCode
from .logging import SafeStderr, get_logger
from .registry import Registry
from .transports.grpc import SERVICE_NAME, BridgeServicer

__all__ = ["PortInUse", "serve", "READY_PREFIX"]

READY_PREFIX = "GRPC_SERVER_READY_ON_PORT="
#: How long a handler's child processes get after SIGTERM before SIGKILL.
CHILD_GRACE = 0.3


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

    # Probe first: a port we can see is taken goes straight to the fallback,
    # without gRPC's C core logging a scary "Failed to add port" error line.
    # gRPC's own bind stays the authority (the port may be taken in between).
    bound = add(config.port) if config.port == 0 or _port_free(config.host, config.port) else 0
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


def _port_free(host: str, port: int) -> bool:
    """False when binding ``host:port`` fails with EADDRINUSE (SO_REUSEADDR on,
    as gRPC sets it, so a port in TIME_WAIT counts as free)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return True  # let gRPC report it
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
    return True


def _credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS credentials; every file checked first, so that a bad one is a
    configuration error naming its flag (exit 3), not a failed bind that
    reads as "port in use" (exit 4), and a FIFO never blocks start-up."""
    if not config.tls_cert or not config.tls_key:
        return None
    from ._proc import read_regular_file

    cert = read_regular_file(config.tls_cert, "--tls-cert")
    key = read_regular_file(config.tls_key, "--tls-key")
    _check_key_pair(config.tls_cert, config.tls_key)
    ca = None
    if config.tls_client_ca:
        ca = read_regular_file(config.tls_client_ca, "--tls-client-ca")
        _check_ca(config.tls_client_ca, ca)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def _check_key_pair(cert: str, key: str) -> None:
    """gRPC reports a key that does not match its certificate only as a failed
    bind (which reads as "port in use"): check the pair first. Raises OSError
    (exit 3, a configuration error) naming both flags."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise OSError(f"--tls-cert {cert!r} and --tls-key {key!r} do not form a valid pair "
                      f"(the key does not match the certificate, or one is not PEM): {exc.reason or exc}") from None


def _check_ca(path: str, data: bytes) -> None:
    """A CA bundle gRPC cannot use fails only at bind (read as "port in use"):
    check it here. Raises OSError (exit 3) naming the flag."""
    import ssl

    try:
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise ValueError("no PEM certificate in it")
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise OSError(f"--tls-client-ca {path!r} is not a usable PEM CA bundle: "
                      f"{getattr(exc, 'reason', None) or exc}") from None


def announce(port: int, ready_fd: int | None = None) -> None:
    """The ready line: the one thing gRPC mode ever writes to stdout.

    ``ready_fd`` is the private duplicate of stdout the CLI kept before
    importing the adapter (fd 1 already points at stderr); the line goes
    there whole, in one flushed write, and the descriptor stays open (a
    launcher may treat EOF on stdout as death). Without it (an in-process
    caller) the line goes to ``sys.stdout``. Afterwards ``sys.stdout`` points
    at stderr, so a handler's ``print()`` lands in the log stream rather than
    the ready channel.
    """
    line = f"{READY_PREFIX}{port}\n"
    if ready_fd is None:
        sys.stdout.write(line)
        sys.stdout.flush()
    else:
        data = line.encode()
        while data:  # a pipe may take a write in parts
            data = data[os.write(ready_fd, data):]
    sys.stdout = SafeStderr()


async def serve(config: Config, registry: Registry, *, parent_pid: int | None = None,
                ready_fd: int | None = None) -> ExitCode:
    """Run the gRPC worker until it is told to stop; returns the exit code.

    ``parent_pid`` is the parent this process was started by (default: the
    current one); when it changes, the parent is gone and the worker stops.
    ``ready_fd``: where the ready line goes (see :func:`announce`).
    Once shutdown begins, a watchdog thread guarantees the process ends within
    ``grace_period + SHUTDOWN_MARGIN`` seconds (it calls ``os._exit``): a
    handler that blocks forever must not keep a pool waiting for SIGKILL.
    """
    log = get_logger("snakepit_bridge.server")
    parent = os.getppid() if parent_pid is None else parent_pid
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
    # grpc.health.v1 and reflection: imported on their first call, not before the ready line.
    standard = StandardServices((SERVICE_NAME,), (SERVICE_NAME,))
    server.add_generic_rpc_handlers((standard,))

    port = bind(server, config, log)
    await server.start()
    if generators is not None and hasattr(generators, "start"):
        generators.start()

    stop = asyncio.Event()
    reason: list[Any] = []  # [why, grace, deadline] once shutdown has begun
    requests = itertools.count()  # next() is atomic: exactly one caller begins shutdown
    loop = asyncio.get_running_loop()

    def request_stop(why: str) -> None:
        """Begin shutdown (once). Called from signal handlers and watcher
        threads, never via the event loop: a handler that blocks the loop
        must not keep SIGTERM or a dead parent from ending the process, so
        the watchdog is armed here."""
        if next(requests):
            if why.startswith("signal"):
                _say(log, "second signal during shutdown; exiting now", reason=why)
                _force_exit(ExitCode.FORCED)
            return
        # The pool is gone when stdin closes or the parent dies: nobody waits for
        # in-flight answers, so the short grace keeps "exit within a second".
        grace = config.grace_period if why.startswith("signal") else min(config.grace_period, PARENT_GONE_GRACE)
        deadline = time.monotonic() + grace + SHUTDOWN_MARGIN
        reason.extend((why, grace, deadline))
        shutdown_switch_interval()
        _arm_watchdog(deadline, log)
        _say(log, "shutting down", reason=why, grace_s=grace, level="info")
        loop.call_soon_threadsafe(stop.set)

    # Plain signal handlers, not loop.add_signal_handler: Python runs them in
    # the main thread between bytecodes, even while a handler hogs the loop.
    if threading.current_thread() is threading.main_thread():  # signal.signal works only there
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: request_stop(f"signal {signal.Signals(signum).name}"))
    if config.watch_stdin:
        _watch_stdin(request_stop)
    if config.watch_parent:
        _watch_parent(parent, request_stop, log)

    # What start-up built (modules, the registry, codecs, grpc's objects) lives
    # as long as the process: out of the collector's sight, so that the
    # collections the calls' garbage sets off never walk it again.
    gc.freeze()
    announce(port, ready_fd)
    log.info("ready", port=port, host=config.host, pid=os.getpid(), commands=len(registry),
             auth="token" if config.auth_token else "none", tls=bool(config.tls_cert))
    await stop.wait()

    why, grace, budget = reason
    await standard.set_serving(False)
    streams = dispatcher.interrupt_streams()
    await server.stop(grace)
    if generators is not None and hasattr(generators, "aclose"):
        await generators.aclose()
    await dispatcher.aclose()
    remaining = max(0.05, budget - time.monotonic() - 0.1)
    children = await asyncio.to_thread(terminate_descendants, min(CHILD_GRACE, remaining))
    log.info("stopped", reason=why, open_streams_closed=streams, children_terminated=len(children))
    return ExitCode.OK


def _force_exit(code: int) -> None:
    """Exit now: kill our children, flush, and skip interpreter teardown (which
    would join handler threads that may never finish)."""
    kill_descendants()
    flush_and_exit(code)


def _arm_watchdog(deadline: float, log: Any) -> None:
    """A daemon thread that ends the process at ``deadline`` if shutdown has
    not (a close hook or generator that never returns, a stuck event loop)."""

    def watch() -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        kill_descendants()  # first: it also tells the reaper this exit is under way
        _say(log, "shutdown overran its budget; exiting now")
        flush_and_exit(ExitCode.OK)

    threading.Thread(target=watch, name="snakepit-shutdown-watchdog", daemon=True).start()


def _watch_stdin(request_stop: Callable[[str], None]) -> bool:
    """When stdin is a pipe (the pool holds its other end), EOF means the pool
    is gone. A terminal or /dev/null is not watched. A daemon thread reads it,
    not the event loop, so a handler that blocks the loop cannot hide the EOF.
    Returns whether stdin is watched."""
    try:
        fd = sys.stdin.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
    except (OSError, ValueError, AttributeError):
        return False

    def read_until_eof() -> None:
        while True:
            try:
                if not os.read(fd, 65536):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        request_stop("stdin closed")

    threading.Thread(target=read_until_eof, name="snakepit-stdin-watch", daemon=True).start()
    return True
