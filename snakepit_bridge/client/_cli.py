"""``python -m snakepit_bridge.client``: call a running bridge from a shell.

Exit codes: 0 done; 1 the call (or the stream's final chunk) failed; 2 a gRPC
or generator error.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc

from ..codecs.values import dumps_json, loads_json
from ._sync import PULL_BATCH, Client
from ._wire import ClientError, StreamChunk

__all__ = ["main"]


def _show(value: Any) -> str:
    return dumps_json(value, default=lambda o: o.decode("latin-1") if isinstance(o, bytes) else str(o)).decode()


def _print_chunk(chunk: StreamChunk) -> None:
    print(_show({"index": chunk.index, "is_final": chunk.is_final, "error": chunk.error, "data": chunk.data}),
          flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m snakepit_bridge.client", description="Call a running bridge.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--token", help="bearer token, if the bridge requires one")
    p.add_argument("--session", help="session id to call in")
    p.add_argument("--timeout-ms", type=int, default=0)
    sub = p.add_subparsers(dest="verb", required=True)
    for verb in ("call", "stream", "pull"):
        s = sub.add_parser(verb)
        s.add_argument("command")
        s.add_argument("args", nargs="?", default="{}", help="arguments as a JSON object")
        if verb == "pull":
            s.add_argument("--batch-size", type=int, default=PULL_BATCH, help="chunks per GetNextBatch")
            s.add_argument("--limit", type=int, help="stop (and close the generator) after this many chunks")
    sub.add_parser("health")
    sub.add_parser("info")
    d = sub.add_parser("describe", help="what each command takes (JSON Schema), whether it streams, its doc")
    d.add_argument("commands", nargs="*", metavar="COMMAND", help="only these (default: every command)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    ns = parser.parse_args(argv)
    if getattr(ns, "limit", None) is not None and ns.limit < 1:
        parser.error("--limit must be >= 1")
    if getattr(ns, "batch_size", 1) < 1:
        parser.error("--batch-size must be >= 1")
    with Client(f"{ns.host}:{ns.port}", token=ns.token) as client:
        try:
            return _run(client, ns)
        except grpc.RpcError as exc:
            sys.stderr.write(f"{exc.code().name}: {exc.details()}\n")
            return 2
        except ClientError as exc:
            sys.stderr.write(f"{exc}\n")
            return 2


def _run(client: Client, ns: argparse.Namespace) -> int:
    if ns.verb == "health":
        h = client.health()
        print(_show({"healthy": h.healthy, "uptime_ms": h.uptime_ms, "total_requests": h.total_requests,
                     "total_errors": h.total_errors, "version": h.version}))
        return 0
    if ns.verb == "info":
        i = client.info()
        print(_show({"worker_type": i.worker_type, "version": i.version,
                     "supported_commands": list(i.supported_commands),
                     "capabilities": dict(i.capabilities)}))
        return 0
    if ns.verb == "describe":
        for d in client.describe(ns.commands):
            print(_show({"name": d.name, "streaming": d.streaming, "typed": d.typed, "doc": d.doc,
                         "params_schema": d.params_schema}))
        return 0
    try:
        args = loads_json(ns.args.encode())  # ints of any length stay exact
    except ValueError as exc:
        sys.stderr.write(f"ARGS must be a JSON object: {exc}\n")
        return 2
    if not isinstance(args, dict):
        sys.stderr.write(f"ARGS must be a JSON object, not {type(args).__name__}\n")
        return 2
    if ns.verb == "call":
        r = (client.execute_in_session(ns.session, ns.command, args, timeout_ms=ns.timeout_ms) if ns.session
             else client.execute(ns.command, args, timeout_ms=ns.timeout_ms))
        print(_show({"success": r.success, "result": r.result, "error": r.error}))
        return 0 if r.success else 1
    failed = False
    if ns.verb == "pull":
        with client.pull(ns.command, args, batch_size=ns.batch_size, session_id=ns.session or "",
                         timeout_ms=ns.timeout_ms) as chunks:
            for n, chunk in enumerate(chunks, 1):
                _print_chunk(chunk)
                failed = failed or bool(chunk.is_final and chunk.error)
                if ns.limit is not None and n >= ns.limit:
                    break  # the with block closes the generator
        return 1 if failed else 0
    for chunk in client.stream(ns.command, args, timeout_ms=ns.timeout_ms, session_id=ns.session):
        _print_chunk(chunk)
        failed = failed or bool(chunk.is_final and chunk.error)
    return 1 if failed else 0
