"""The bridge with parts of its server arrangement swapped out, to find where a
unary call's cost is: a tool for :mod:`benchmarks.ab_grpc`, not a server to deploy.

    .venv/bin/python -m benchmarks.ab_grpc \\
        --bridge "const=benchmarks/bridge_variants.py --variant const" \\
        --bridge "const-bare=benchmarks/bridge_variants.py --variant const,no-health,no-watch"

Variants (comma-separated after ``--variant``; the other flags go to the bridge):

* ``const``: Execute answers as the bare servicer does (``result`` = the
  request's args, a timestamp, the request id) and nothing else: everything
  else is the bridge's own arrangement (server options, health and
  reflection services, dispatcher and its thread pools, signal handlers, the
  stdin and parent watchers, the logging set-up);
* ``no-health``: no grpc.health.v1 and reflection services;
* ``no-watch``: no stdin and parent watcher threads;
* ``sync-unary``: the bridge as it is, plus a synchronous grpcio server (a
  thread pool of 10, as the bare sync servicer and Snakepit 0.3's own bridge
  have) on another port, and the ready line names that one. Its ``Execute``
  runs the bridge's real path in the pool thread: ``BridgeServicer._now``
  (``Dispatcher.call_now``: decode, the inline handler, encode, the call's
  log line) and the same response; any call ``_now`` does not answer goes to
  the event loop's ``_unary`` and the thread waits for it. ``Health`` and
  ``GetInfo`` go to the loop the same way. Nothing else is served there (no
  streams, sessions, generators, health or reflection service): a
  measurement of what the arrangement would gain for unary calls, not a
  design (see docs/performance.md, "Small calls, third round").

Measured 2026-12-02 (see docs/performance.md): ``const`` spends the bare
aio servicer's server CPU per call within the noise, so what a bridge call
costs beyond the bare servicer is its Execute path, not the arrangement.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from snakepit_bridge import cli, server
from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge.transports import grpc as transport


def _apply(variants: set[str]) -> None:
    if "const" in variants:
        async def execute(self: Any, request: pb.ExecuteRequest, context: Any) -> pb.ExecuteResponse:
            return pb.ExecuteResponse(success=True, result=request.args, timestamp=time.time_ns(),
                                      request_id=request.request_id)

        transport.BridgeServicer.Execute = execute  # type: ignore[method-assign]
    if "no-health" in variants:
        server.StandardServices.service = lambda *_: None  # type: ignore[method-assign]
    if "no-watch" in variants:
        server._watch_stdin = lambda *_: False
        server._watch_parent = lambda *_: None


def _sync_unary() -> None:
    """Serve Execute from a grpcio thread-pool server too (see the module docstring)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc

    made: list[Any] = []

    class Servicer(transport.BridgeServicer):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            made.append(self)

    class SyncExecute(pb_grpc.SnakepitBridgeServicer):
        def __init__(self, servicer: Any, loop: asyncio.AbstractEventLoop) -> None:
            self.servicer, self.loop = servicer, loop

        def _on_loop(self, coro: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

        def Execute(self, request: pb.ExecuteRequest, context: Any) -> pb.ExecuteResponse:
            servicer = self.servicer
            result = servicer._now(request, "", context)
            if result is not None and result.code == "OK":
                return servicer._response(result, request.request_id)
            return self._on_loop(servicer._unary(request, "", context, result))

        def Health(self, request: Any, context: Any) -> Any:
            return self._on_loop(self.servicer.Health(request, context))

        def GetInfo(self, request: Any, context: Any) -> Any:
            return self._on_loop(self.servicer.GetInfo(request, context))

    announce = server.announce

    def announce_sync(port: int, ready_fd: int | None = None) -> None:
        sync = grpc.server(ThreadPoolExecutor(10), options=[
            ("grpc.max_receive_message_length", 100 * 2**20), ("grpc.max_send_message_length", 100 * 2**20),
            ("grpc.so_reuseport", 0)])
        pb_grpc.add_SnakepitBridgeServicer_to_server(SyncExecute(made[-1], asyncio.get_running_loop()), sync)
        sync_port = sync.add_insecure_port("127.0.0.1:0")
        sync.start()
        made.append(sync)  # kept alive
        announce(sync_port, ready_fd)

    transport.BridgeServicer = Servicer  # type: ignore[misc]
    server.BridgeServicer = Servicer  # type: ignore[misc]
    server.announce = announce_sync


def main() -> None:
    argv = sys.argv[1:]
    variants: set[str] = set()
    if "--variant" in argv:
        i = argv.index("--variant")
        variants = set(argv[i + 1].split(","))
        del argv[i:i + 2]
    unknown = variants - {"const", "no-health", "no-watch", "sync-unary"}
    if unknown:
        sys.exit(f"unknown variant(s): {', '.join(sorted(unknown))}")
    _apply(variants)
    if "sync-unary" in variants:
        _sync_unary()
    sys.exit(cli.main(argv))


if __name__ == "__main__":
    main()
