"""A bare grpcio servicer of ``snakepit.SnakepitBridge``: the baseline.

Same service, same server (grpc.aio, same message limits, SO_REUSEPORT off,
same ready line), no logic: no registry, no dispatch, no codecs, no logging.

* ``Execute`` hands the request's ``args`` back untouched as ``result``.
* ``ExecuteStream`` yields ``count`` empty chunks, then an empty final chunk.

Two probes mirror the bridge-side handlers in :mod:`benchmarks.handlers`, so
that cancellation and backpressure are measured the same way on both:

* stream ``cancel_probe`` (arg ``tag``) yields empty chunks until cancelled and
  records ``time.monotonic_ns()`` in its ``finally``;
* stream ``lead_probe`` (args ``tag``, ``size``) yields chunks of ``size`` bytes
  forever and records how many it produced;
* unary ``probe`` (arg ``tag``) returns both records.

``--sync`` serves the same servicer from grpcio's synchronous server (a
thread pool of ``--threads``, the arrangement Snakepit 0.3's own bridge uses):
the other floor a unary call is measured against.

``--raw`` is the least a grpc.aio server can do per call: Execute through a
generic handler with no (de)serializers, a coroutine answering with the same
pre-serialized bytes every time; every other method is left out. It answers
pings only: the floor of grpc.aio itself. (A plain function there costs more:
grpc.aio runs it in a thread.)

Run: ``python -m benchmarks.bare_grpc [--port 0] [--sync [--threads 10] | --raw]``.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc

LIMIT = 100 * 1024 * 1024
FINALIZED: dict[str, int] = {}
PRODUCED: dict[str, int] = {}


def _int(args, key: str, default: int = 0) -> int:
    raw = args.get(key)
    return int(raw) if raw else default


class BareServicer(pb_grpc.SnakepitBridgeServicer):
    async def Execute(self, request, context):
        if request.command == "probe":
            tag = request.args["tag"].decode()
            return pb.ExecuteResponse(success=True, result={
                "finalized": str(FINALIZED.get(tag, 0)).encode(),
                "produced": str(PRODUCED.get(tag, 0)).encode(),
            })
        return pb.ExecuteResponse(success=True, result=request.args, timestamp=time.time_ns(),
                                  request_id=request.request_id)

    async def ExecuteStream(self, request, context):
        if request.command == "cancel_probe":
            tag = request.args["tag"].decode()
            try:
                while True:
                    yield pb.StreamResponse()
            finally:
                FINALIZED[tag] = time.monotonic_ns()
        if request.command == "lead_probe":
            tag = request.args["tag"].decode()
            payload = b"x" * _int(request.args, "size")
            i = 0
            while True:
                i += 1
                PRODUCED[tag] = i
                yield pb.StreamResponse(chunk={"payload": payload}, chunk_index=i - 1)
        count = _int(request.args, "count")
        for i in range(count):
            yield pb.StreamResponse(chunk_index=i)
        yield pb.StreamResponse(is_final=True, chunk_index=count)

    async def Health(self, request, context):
        return pb.HealthResponse(healthy=True, worker_id=request.worker_id)

    async def GetInfo(self, request, context):
        return pb.InfoResponse(worker_type="bare")


OPTIONS = [
    ("grpc.max_receive_message_length", LIMIT),
    ("grpc.max_send_message_length", LIMIT),
    ("grpc.so_reuseport", 0),
]


class SyncServicer(pb_grpc.SnakepitBridgeServicer):
    """The same answers from plain methods, for grpcio's thread-pool server."""

    def Execute(self, request, context):
        if request.command == "probe":
            tag = request.args["tag"].decode()
            return pb.ExecuteResponse(success=True, result={
                "finalized": str(FINALIZED.get(tag, 0)).encode(),
                "produced": str(PRODUCED.get(tag, 0)).encode(),
            })
        return pb.ExecuteResponse(success=True, result=request.args, timestamp=time.time_ns(),
                                  request_id=request.request_id)

    def ExecuteStream(self, request, context):
        count = _int(request.args, "count")
        for i in range(count):
            yield pb.StreamResponse(chunk_index=i)
        yield pb.StreamResponse(is_final=True, chunk_index=count)

    def Health(self, request, context):
        return pb.HealthResponse(healthy=True, worker_id=request.worker_id)

    def GetInfo(self, request, context):
        return pb.InfoResponse(worker_type="bare-sync")


def _bind(server, port: int) -> int:
    """``port``, or any free one when it is taken (as the bridge does, so a
    start storm on a shared port range is the same task for both)."""
    try:
        return server.add_insecure_port(f"127.0.0.1:{port}") or server.add_insecure_port("127.0.0.1:0")
    except RuntimeError:
        return server.add_insecure_port("127.0.0.1:0")


def serve_sync(port: int, threads: int) -> None:
    server = grpc.server(ThreadPoolExecutor(threads), options=OPTIONS)
    pb_grpc.add_SnakepitBridgeServicer_to_server(SyncServicer(), server)
    bound = _bind(server, port)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sys.stdout.write(f"GRPC_SERVER_READY_ON_PORT={bound}\n")
    sys.stdout.flush()
    stop.wait()
    server.stop(0)


def _raw_handler() -> grpc.GenericRpcHandler:
    answer = pb.ExecuteResponse(success=True).SerializeToString()

    async def execute(request: bytes, context) -> bytes:
        return answer

    return grpc.method_handlers_generic_handler(
        "snakepit.SnakepitBridge", {"Execute": grpc.unary_unary_rpc_method_handler(execute)})


async def serve(port: int, raw: bool = False) -> None:
    server = grpc.aio.server(options=OPTIONS)
    if raw:
        server.add_generic_rpc_handlers((_raw_handler(),))
    else:
        pb_grpc.add_SnakepitBridgeServicer_to_server(BareServicer(), server)
    bound = _bind(server, port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"GRPC_SERVER_READY_ON_PORT={bound}\n")
    sys.stdout.flush()
    await stop.wait()
    await server.stop(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--sync", action="store_true", help="grpcio's thread-pool server instead of grpc.aio")
    p.add_argument("--threads", type=int, default=10, help="--sync: pool size (default 10)")
    p.add_argument("--raw", action="store_true", help="grpc.aio's floor: Execute as raw bytes, pings only")
    ns = p.parse_args()
    if ns.sync:
        serve_sync(ns.port, ns.threads)
    else:
        asyncio.run(serve(ns.port, ns.raw))


if __name__ == "__main__":
    main()
