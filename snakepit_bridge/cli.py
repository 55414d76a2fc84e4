"""``grpc_bridge.py`` / ``snakepit-bridge``: argv -> :class:`Config` -> a server.

The launch lines Snakepit 0.3 uses (CONTRACT.md §1 and §4)::

    python3 grpc_bridge.py [--adapter MODULE.CLASS] --port N
    python3 grpc_bridge.py --mode pool-worker [--protocol json|msgpack] [--quiet]

Defaults that are safe for a pool of many workers on one machine:

* Threads: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS,
  NUMEXPR_NUM_THREADS and VECLIB_MAXIMUM_THREADS are set to 1 unless already
  set in the environment (a value the user set is kept). A pool of N workers
  each starting one BLAS thread per core would run N x cores threads; set the
  variables explicitly to give one worker more.
* Network: listen on 127.0.0.1. A non-loopback ``--host`` needs a token
  (``--auth-token-file`` or SNAKEPIT_BRIDGE_AUTH_TOKEN), TLS, or ``--insecure``.
* Ports: a taken ``--port`` binds another free port, with a warning, and the
  ready line reports it (``--strict-port`` exits 4 instead); see ``server.py``.
* Orphans: the worker exits when its parent dies or its piped stdin closes.
* Exit: the process ends with ``os._exit`` after flushing, so a handler thread
  blocked forever cannot hold it past the shutdown budget. Exit codes are in
  :class:`~snakepit_bridge.exitcodes.ExitCode`.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import _malloc
from .config import Config, ConfigError
from .exitcodes import ExitCode

if TYPE_CHECKING:
    import argparse

__all__ = ["main", "parse_config"]

# A pool runs many workers: one BLAS/OpenMP thread each unless the user says otherwise.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
TOKEN_ENV = "SNAKEPIT_BRIDGE_AUTH_TOKEN"
# Taken at import, as early as possible: the parent that started us. If it has
# changed by the time the server watches it, the parent died during startup.
STARTED_BY = os.getppid()


# Every flag, as argparse.add_argument's arguments: one declaration that
# _parser() builds argparse's parser from and _plain() reads (defaults,
# choices, types) for the launch lines Snakepit uses.
_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--mode", dict(choices=["grpc", "pool-worker"], default="grpc",
        help=("grpc (default) or pool-worker: framed JSON/MessagePack on stdin/stdout"))),
    ("--adapter", dict(help="MODULE.CLASS (or MODULE) providing commands, in addition to the built-ins")),
    ("--port", dict(type=int, default=50051,
        help=("port to listen on (default 50051); if taken, another free port is bound and reported in "
              "the ready line; 0 = any free port"))),
    ("--host", dict(default="127.0.0.1", help="address to listen on (default 127.0.0.1)")),
    ("--strict-port", dict(action="store_true", help="exit with code 4 if --port is taken instead of binding another")),
    ("--protocol", dict(choices=["json", "msgpack"], help="pool-worker: fixed wire protocol (default: negotiate)")),
    ("--quiet", dict(action="store_true", help="log warnings and errors only")),
    ("--worker-id", dict(default="", help="name reported by Health when the caller sends none")),
    ("--binary-threshold", dict(type=int, default=10_240, metavar="BYTES",
        help=("for callers that accept binary encodings, values above this many bytes travel binary "
              "(default 10240; 0 = structured values always binary)"))),
    ("--default-accept-encodings", dict(default="", metavar="LIST",
        help=("binary encodings (npy,raw,utf8,msgpack or all) for callers that ask for none, as Snakepit "
              "0.3 never does; default: none, every value JSON at any size (see docs/protocol.md)"))),
    ("--max-message-mb", dict(type=int, default=100, help="largest message either way, in MB (default 100)")),
    ("--max-workers", dict(type=int, default=256,
        help=("threads for sync handlers, and as many for sync generators (default 256)"))),
    ("--stream-buffer", dict(type=int, default=8, help="chunks a producer may run ahead of a slow client (default 8)")),
    ("--max-execute-mb", dict(type=float, default=512.0,
        help=("Execute on a streaming command collects at most this many MB of chunks (default 512)"))),
    ("--max-stream-buffer-mb", dict(type=float, default=1024.0,
        help=("chunks buffered by all open streams together, in MB; a stream nobody reads that would pass"
              " it ends with RESOURCE_EXHAUSTED (default 1024)"))),
    ("--session-ttl", dict(type=float, default=3600.0, metavar="SECONDS",
        help=("idle sessions expire after this (default 3600)"))),
    ("--max-sessions", dict(type=int, default=10_000,
        help=("cap on sessions; least recently used is evicted (default 10000)"))),
    ("--max-session-mb", dict(type=float, default=1024.0,
        help=("cap on one session's (and the worker-global store's) estimated size in MB (default 1024; 0"
              " = none)"))),
    ("--max-sessions-total-mb", dict(type=float, default=8192.0,
        help=("cap on all sessions' estimated size together, in MB (default 8192; 0 = none)"))),
    ("--no-session-lock", dict(action="store_true", help="let unary calls within one session run concurrently")),
    ("--generator-ttl", dict(type=float, default=300.0, metavar="SECONDS",
        help=("idle pull-based generators are closed after this"))),
    ("--max-generators", dict(type=int, default=1000, help="cap on open pull-based generators (default 1000)")),
    ("--max-generator-args-mb", dict(type=float, default=1024.0,
        help=("arguments held by open pull generators together, in MB (default 1024)"))),
    ("--malloc-keep-mb", dict(type=float, default=256.0,
        help=("free memory each malloc heap keeps for the next large message once one passed, given back "
              "after 2 s without one, in MB (default 256; 0 = glibc's defaults)"))),
    ("--grace-period", dict(type=float, default=1.5, metavar="SECONDS",
        help=("time in-flight calls get on SIGTERM (default 1.5)"))),
    ("--data-dir", dict(action="append", default=[], metavar="DIR",
        help=("a directory whose regular files the built-ins may read when a caller names them "
              "(file_path, log_path, model_path); repeatable; none (default) = no file access"))),
    ("--auth-token-file", dict(help=f"file holding the bearer token every call must carry (or set {TOKEN_ENV})")),
    ("--tls-cert", dict(help="PEM certificate chain for TLS")),
    ("--tls-key", dict(help="PEM private key for TLS")),
    ("--tls-client-ca", dict(help="PEM CA bundle: require and verify client certificates (mTLS)")),
    ("--insecure", dict(action="store_true", help="allow a non-loopback --host without token or TLS")),
    ("--no-parent-watch", dict(action="store_true",
        help=("keep running when the parent exits or a piped stdin closes (a supervisor other than the "
              "pool)"))),
    ("--log-format", dict(choices=["console", "json"], default="console", help="stderr log format (default console)")),
    ("--log-level", dict(choices=["debug", "info", "warning", "error"], default="info",
        help=("default info: one line per call; debug adds per-chunk lines"))),
)


def _parser() -> argparse.ArgumentParser:
    import argparse  # here: the launch lines Snakepit uses never build it (see _plain)

    p = argparse.ArgumentParser(prog="grpc_bridge.py", description="Snakepit worker: serves Python commands to an Elixir pool.")
    for flag, kwargs in _FLAGS:
        p.add_argument(flag, **kwargs)
    return p


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Argv (and the auth-token variable) -> a validated :class:`Config`.
    Raises SystemExit(2) on bad flags and :class:`ConfigError` on bad combinations."""
    ns = _plain(sys.argv[1:] if argv is None else argv) or _parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    # Stripped (a secret mounted from a file often ends in a newline); an empty
    # one is refused by Config, never taken as "no auth".
    token = environ.get(TOKEN_ENV)
    token = token.strip() if token is not None else None
    if ns.auth_token_file:
        from ._proc import read_regular_file

        try:
            token = read_regular_file(ns.auth_token_file, "--auth-token-file").decode("utf-8").strip()
        except OSError as exc:
            raise ConfigError(str(exc)) from None
        except UnicodeDecodeError:
            raise ConfigError(f"--auth-token-file {ns.auth_token_file!r} is not UTF-8 text") from None
    if token and not all(" " <= c <= "~" for c in token):
        # grpc refuses such a value in metadata: every call would fail UNAUTHENTICATED.
        raise ConfigError("the auth token must be printable ASCII (gRPC metadata carries nothing else)")
    return Config(
        mode=ns.mode, host=ns.host, port=ns.port, strict_port=ns.strict_port, adapter=ns.adapter,
        protocol=ns.protocol, quiet=ns.quiet, worker_id=ns.worker_id,
        binary_threshold=ns.binary_threshold, max_message_mb=ns.max_message_mb,
        default_accept_encodings=_encodings(ns.default_accept_encodings),
        max_workers=ns.max_workers, stream_buffer=ns.stream_buffer,
        max_execute_bytes=int(ns.max_execute_mb * 1024 * 1024),
        max_stream_buffer_bytes=int(ns.max_stream_buffer_mb * 1024 * 1024),
        session_ttl=ns.session_ttl, max_sessions=ns.max_sessions,
        max_session_bytes=int(ns.max_session_mb * 1024 * 1024),
        max_sessions_total_bytes=int(ns.max_sessions_total_mb * 1024 * 1024), session_lock=not ns.no_session_lock,
        generator_ttl=ns.generator_ttl, max_generators=ns.max_generators,
        max_generator_args_bytes=int(ns.max_generator_args_mb * 1024 * 1024), grace_period=ns.grace_period,
        malloc_keep_bytes=int(ns.malloc_keep_mb * 1024 * 1024),
        insecure=ns.insecure, auth_token=token, tls_cert=ns.tls_cert, tls_key=ns.tls_key,
        tls_client_ca=ns.tls_client_ca, log_format=ns.log_format,
        watch_stdin=not ns.no_parent_watch, watch_parent=not ns.no_parent_watch,
        data_dirs=tuple(os.path.realpath(d) for d in ns.data_dir),
        log_level="warning" if ns.quiet and ns.log_level == "info" else ns.log_level,
    )


# The flags of the launch lines Snakepit 0.3 uses.
_PLAIN = frozenset(("--mode", "--protocol", "--adapter", "--port", "--log-level", "--log-format", "--quiet",
                    "--no-parent-watch"))


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _plain(argv: Sequence[str]) -> Any:
    """The namespace argparse would return for a plain launch line (only the
    flags of ``_PLAIN``, each as ``--flag value`` with a valid value), read
    from ``_FLAGS`` without building the parser (about 3 ms of a stdio
    worker's start-up); None for anything else (abbreviations,
    ``--flag=value``, other flags, bad values, ``--help``), which argparse
    parses and reports as usual. tests/test_cli.py checks that both agree."""
    from types import SimpleNamespace

    flags = dict(_FLAGS)
    given = {_dest(flag): False if kw.get("action") == "store_true" else kw.get("default") for flag, kw in _FLAGS}
    i = 0
    while i < len(argv):
        flag = argv[i]
        kw = flags.get(flag) if flag in _PLAIN else None
        if kw is None:
            return None
        if kw.get("action") == "store_true":
            given[_dest(flag)] = True
            i += 1
            continue
        if i + 1 == len(argv):
            return None
        value = argv[i + 1]
        if "choices" in kw:
            ok = value in kw["choices"]
        elif kw.get("type") is int:
            ok = value.isdecimal()
        else:
            ok = value[:1] not in ("-", "")
        if not ok:
            return None
        given[_dest(flag)] = int(value) if kw.get("type") is int else value
        i += 2
    return SimpleNamespace(**given)


def _encodings(text: str) -> tuple[str, ...]:
    """``--default-accept-encodings``: a comma-separated list, ``all`` or ``none``."""
    from .config import BINARY_ENCODINGS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names == ("all",):
        return BINARY_ENCODINGS
    return () if names in ((), ("none",)) else names


def _fail(message: str, code: ExitCode) -> int:
    sys.stderr.write(f"snakepit-bridge: error: {message}\n")
    sys.stderr.flush()
    return int(code)


def _claim_stdout() -> int | None:
    """gRPC mode: keep a private duplicate of fd 1 for the ready line and point
    fd 1 at stderr (None when there is no stdout). Done before the adapter is
    imported: anything it writes to stdout would otherwise land in front of
    the ready line (``loading... GRPC_SERVER_...``) and the pool would never
    see the worker ready. The duplicate stays open for the life of the
    process: a launcher may treat EOF on stdout as death."""
    from ._proc import take_stdout

    try:
        return take_stdout()
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run a worker. Bad configuration returns its exit code; a worker that
    started ends the process itself (see :func:`_finish`) and never returns."""
    for var in THREAD_VARS:
        os.environ.setdefault(var, "1")
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        return _fail(str(exc), ExitCode.CONFIG)

    from . import logging as bridge_logging

    bridge_logging.configure(config.log_level, config.log_format)
    _malloc.configure(config.malloc_keep_bytes)

    # The last resort for the exit guarantees, before any user code runs: a
    # handler holding the GIL in C must not keep SIGTERM or a dead parent
    # from ending the process (see snakepit_bridge/_reaper.py).
    from ._lifecycle import start_reaper, stdin_is_watched

    # A stdio worker without user code has it set up now (a signal is kept
    # for it) and started once the first frame is answered (transports.stdio).
    stdio = config.mode == "pool-worker"
    start_reaper(config.grace_period, STARTED_BY if config.watch_parent else None, config.log_format,
                 (stdio or config.watch_stdin) and stdin_is_watched(stdio), spawn_now=not stdio or bool(config.adapter))

    if config.mode == "pool-worker":
        # Take stdout for frames before any user code runs: an adapter that
        # prints at import time would otherwise corrupt the pool's first frame.
        from .transports.stdio import claim_stdio

        claim_stdio()
        ready_fd = None
    else:
        # gRPC mode: the same for the ready line, which must be the first
        # and only thing on stdout.
        ready_fd = _claim_stdout()

    from .adapters.legacy import AdapterError, load_adapter
    from .commands import builtin_registry

    registry = builtin_registry(lazy=True)
    if config.adapter:
        try:
            registry.update(load_adapter(config.adapter))
        except AdapterError as exc:
            return _fail(str(exc), ExitCode.CONFIG)

    if config.mode == "pool-worker":
        from .transports.stdio import run as run_stdio

        _finish(run_stdio(config, registry, parent_pid=STARTED_BY))

    from .server import PortInUse, serve

    _finish(serve(config, registry, parent_pid=STARTED_BY, ready_fd=ready_fd),
            {PortInUse: ExitCode.PORT_IN_USE, OSError: ExitCode.CONFIG})


def _finish(main_coro: Coroutine[Any, Any, int], startup_errors: dict[type[Exception], ExitCode] | None = None) -> NoReturn:
    """Run the worker's coroutine to its exit code, then end the process with
    ``os._exit`` after flushing. Not ``asyncio.run``: its teardown cancels and
    awaits every task (a handler that swallows cancellation would hang it), and
    interpreter exit joins worker threads (a handler blocked forever would).

    ``startup_errors`` maps exceptions the worker raises when it cannot start
    (a taken port with --strict-port) to the exit code reported for them."""
    import asyncio  # here, not at module level: a stdio worker serves its first frames without it

    from ._proc import flush_and_exit

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        code = int(loop.run_until_complete(main_coro))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say why, exit non-zero
        for kind, exit_code in (startup_errors or {}).items():
            if isinstance(exc, kind):
                code = _fail(str(exc) if kind is not OSError else f"cannot start: {exc}", exit_code)
                break
        else:
            from .logging import get_logger

            get_logger("snakepit_bridge.cli").exception("worker failed", error=f"{type(exc).__name__}: {exc}")
            code = int(ExitCode.ERROR)
    flush_and_exit(code)


if __name__ == "__main__":
    sys.exit(main())
