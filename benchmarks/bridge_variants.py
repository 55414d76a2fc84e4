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
* ``no-watch``: no stdin and parent watcher threads.

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
        server.health_pb2_grpc.add_HealthServicer_to_server = lambda *_: None
        server.reflection.enable_server_reflection = lambda *_: None
    if "no-watch" in variants:
        server._watch_stdin = lambda *_: False
        server._watch_parent = lambda *_: None


def main() -> None:
    argv = sys.argv[1:]
    variants: set[str] = set()
    if "--variant" in argv:
        i = argv.index("--variant")
        variants = set(argv[i + 1].split(","))
        del argv[i:i + 2]
    unknown = variants - {"const", "no-health", "no-watch"}
    if unknown:
        sys.exit(f"unknown variant(s): {', '.join(sorted(unknown))}")
    _apply(variants)
    sys.exit(cli.main(argv))


if __name__ == "__main__":
    main()
