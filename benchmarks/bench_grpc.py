"""gRPC-mode benchmarks: startup, unary calls, streams, first chunk, cancellation, backpressure.

Each function measures one workload on the bridge and on the bare servicer in
turn and returns :class:`~benchmarks.report.Row` records. The client is a
``grpc.aio`` stub in this process; its own cost is in every wall figure, which
is why server CPU (from /proc) is reported beside it.
"""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid

import grpc

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc
from snakepit_bridge.client import encode_args

from .procs import Server, bare_grpc_cmd, bridge_cmd
from .report import Row, median, pct

LIMIT = 100 * 1024 * 1024
OPTIONS = [("grpc.max_receive_message_length", LIMIT), ("grpc.max_send_message_length", LIMIT)]


def channel(server: Server) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(server.target, options=OPTIONS)


def bridge_request(command: str, args: dict | None = None) -> pb.ExecuteRequest:
    raw, enc = encode_args(args or {})
    return pb.ExecuteRequest(command=command, args=raw, arg_encodings=enc, request_id="bench")


def bare_request(command: str, args: dict | None = None) -> pb.ExecuteRequest:
    """The bare servicer reads ints and tags as plain text."""
    raw = {k: str(v).encode() for k, v in (args or {}).items()}
    return pb.ExecuteRequest(command=command, args=raw, request_id="bench")


# -- startup ------------------------------------------------------------------------------


def startup(reps: int, bridge_args: list[str]) -> list[Row]:
    """Spawn to ready line, and RSS once ready and one call served."""

    def measure(cmd: list[str]) -> tuple[list[float], list[float]]:
        times, rss = [], []
        for _ in range(reps):
            with Server(cmd) as s:
                times.append(s.startup * 1000)
                with grpc.insecure_channel(s.target) as ch:
                    pb_grpc.SnakepitBridgeStub(ch).Health(pb.HealthRequest(), timeout=10)
                rss.append(s.rss() / 2**20)
        return times, rss

    b_t, b_rss = measure(bridge_cmd("--port", "0", *bridge_args))
    g_t, g_rss = measure(bare_grpc_cmd("--port", "0"))
    imp = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import grpc"], check=True)
        imp.append((time.perf_counter() - t0) * 1000)
    section = "Startup"
    return [
        Row(section, "spawn to ready line", "ms", median(b_t), median(g_t)),
        Row(section, "spawn to ready vs `python -c \"import grpc\"`", "ms", median(b_t), median(imp),
            note="goal ≤ 2.5×"),
        Row(section, "idle RSS after one call", "MB", median(b_rss), median(g_rss)),
    ]


# -- unary ----------------------------------------------------------------------------


async def _unary(stub, request, total: int, inflight: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    per_task = total // inflight

    async def worker() -> None:
        for _ in range(per_task):
            t0 = time.perf_counter()
            response = await stub.Execute(request)
            latencies.append(time.perf_counter() - t0)
            if not response.success:
                raise RuntimeError(f"call failed: {response.error}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return time.perf_counter() - t0, latencies


async def unary(bridge: Server, bare: Server, total: int, rounds: int = 3,
                sync: Server | None = None) -> list[Row]:
    """Bridge, bare grpc.aio servicer and (given ``sync``) bare thread-pool
    servicer take turns (``rounds`` blocks each), so a change in the machine's
    load during the run hits all of them alike. Rows compare the bridge with
    each bare servicer; server CPU per call beside the rates."""
    rows = []
    servers = {"bridge": bridge, "bare": bare}
    if sync is not None:
        servers["sync"] = sync
    async with contextlib.AsyncExitStack() as stack:
        stubs = {}
        for key, server in servers.items():
            ch = await stack.enter_async_context(channel(server))
            stubs[key] = pb_grpc.SnakepitBridgeStub(ch)
        reqs = {key: bridge_request("ping") if key == "bridge" else bare_request("ping") for key in servers}
        for key in servers:  # warm up every server
            await _unary(stubs[key], reqs[key], 200, 8)
        for inflight in (1, 8, 64):
            n = (total if inflight > 1 else total // 2) // rounds
            acc = {key: [0.0, 0.0, []] for key in servers}  # seconds, cpu seconds, latencies
            for _ in range(rounds):
                for key, server in servers.items():
                    cpu = server.cpu()
                    elapsed, latencies = await _unary(stubs[key], reqs[key], n, inflight)
                    acc[key][0] += elapsed
                    acc[key][1] += server.cpu() - cpu
                    acc[key][2] += latencies
            calls = n * rounds
            label = "sequential" if inflight == 1 else f"{inflight} in flight"
            (tb, cb_, lb) = acc["bridge"]
            for key, against in (("bare", ""), ("sync", " vs the sync servicer")):
                if key not in acc:
                    continue
                t0, c0_, l0 = acc[key]
                rows.append(Row("Unary ping", f"{label}: throughput{against}", "calls/s", calls / tb, calls / t0,
                                higher_is_better=True, bridge_cpu=cb_ / calls * 1e6, bare_cpu=c0_ / calls * 1e6))
                rows.append(Row("Unary ping", f"{label}: latency p50{against}", "ms", median(lb) * 1e3,
                                median(l0) * 1e3))
                if inflight == 1:
                    rows.append(Row("Unary ping", f"{label}: latency p99{against}", "ms", pct(lb, 99) * 1e3,
                                    pct(l0, 99) * 1e3))
    return rows


# -- streams -------------------------------------------------------------------------


async def _drain(stub, request) -> int:
    n = 0
    async for response in stub.ExecuteStream(request):
        n += 1
        if response.error:
            raise RuntimeError(f"stream failed: {response.error}")
    return n


async def _streams(server: Server, stub, request_for, streams: int, per_stream: int) -> tuple[float, float]:
    cpu = server.cpu()
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(_drain(stub, request_for(per_stream)) for _ in range(streams)))
    elapsed = time.perf_counter() - t0
    chunks = sum(counts)
    return chunks / elapsed, (server.cpu() - cpu) / chunks * 1e6


async def streams(bridge: Server, bare: Server, total: int, rounds: int = 2) -> list[Row]:
    rows = []
    async with channel(bridge) as cb, channel(bare) as c0:
        sb, s0 = pb_grpc.SnakepitBridgeStub(cb), pb_grpc.SnakepitBridgeStub(c0)
        bare_req = lambda n: bare_request("stream", {"count": n})  # noqa: E731
        await _streams(bare, s0, bare_req, 1, 1000)
        for n_streams in (1, 8):
            per = total // n_streams // rounds
            for command, kind in (("bench_stream", "async generator"), ("bench_stream_sync", "sync generator")):
                req = lambda n, c=command: bridge_request(c, {"count": n})  # noqa: E731
                await _streams(bridge, sb, req, 1, 500)
                b_rates, b_cpus, z_rates, z_cpus = [], [], [], []
                for _ in range(rounds):  # take turns with the bare servicer
                    rate, cpu = await _streams(bridge, sb, req, n_streams, per)
                    b_rates.append(rate)
                    b_cpus.append(cpu)
                    rate, cpu = await _streams(bare, s0, bare_req, n_streams, per)
                    z_rates.append(rate)
                    z_cpus.append(cpu)
                label = "1 stream" if n_streams == 1 else f"{n_streams} concurrent streams"
                rows.append(Row("Streams (empty chunks)", f"{label}, {kind}", "chunks/s", median(b_rates),
                                median(z_rates), higher_is_better=True, bridge_cpu=median(b_cpus),
                                bare_cpu=median(z_cpus), cpu_unit="µs/chunk"))
    return rows


async def _first_chunk(stub, request, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call = stub.ExecuteStream(request)
        await call.read()
        times.append((time.perf_counter() - t0) * 1000)
        call.cancel()
    return times


async def first_chunk(bridge: Server, bare: Server, reps: int) -> list[Row]:
    n = 1_000_000
    section = "First chunk of a 1,000,000-item stream"
    async with channel(bridge) as cb, channel(bare) as c0:
        sb, s0 = pb_grpc.SnakepitBridgeStub(cb), pb_grpc.SnakepitBridgeStub(c0)
        bare_req = bare_request("stream", {"count": n})
        await _first_chunk(s0, bare_req, 3)
        rows = []
        for command, kind in (("bench_stream", "async generator"), ("bench_stream_sync", "sync generator"),
                              ("ping_stream", "built-in ping_stream")):
            req = bridge_request(command, {"count": n})
            await _first_chunk(sb, req, 3)
            ms, bare_ms = [], []
            for _ in range(reps):  # take turns with the bare servicer
                ms += await _first_chunk(sb, req, 1)
                bare_ms += await _first_chunk(s0, bare_req, 1)
            rows.append(Row(section, f"{kind}: p50", "ms", median(ms), median(bare_ms)))
            rows.append(Row(section, f"{kind}: p95", "ms", pct(ms, 95), pct(bare_ms, 95)))
    return rows


# -- cancellation and backpressure -----------------------------------------------------


async def _finalized(stub, request: pb.ExecuteRequest, key: str, timeout: float = 3.0) -> int:
    """Ask the probe until the generator's finalizer has run (the time is recorded server-side)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await stub.Execute(request)
        value = int(response.result[key] or 0)
        if value:
            return value
        await asyncio.sleep(0.002)
    return 0


async def _cancel_latency(stub, make_stream, make_probe, reps: int) -> tuple[list[float], int]:
    latencies, missing = [], 0
    for _ in range(reps):
        tag = uuid.uuid4().hex
        call = stub.ExecuteStream(make_stream(tag))
        for _ in range(3):
            await call.read()
        cancelled_at = time.monotonic_ns()  # CLOCK_MONOTONIC is system-wide on Linux
        call.cancel()
        finalized = await _finalized(stub, make_probe(tag), "finalized")
        if finalized:
            latencies.append((finalized - cancelled_at) / 1e6)
        else:
            missing += 1
    return latencies, missing


async def cancellation(bridge: Server, bare: Server, reps: int) -> list[Row]:
    rows = []
    async with channel(bridge) as cb, channel(bare) as c0:
        sb, s0 = pb_grpc.SnakepitBridgeStub(cb), pb_grpc.SnakepitBridgeStub(c0)
        bare_ms, _ = await _cancel_latency(
            s0, lambda t: bare_request("cancel_probe", {"tag": t}), lambda t: bare_request("probe", {"tag": t}), reps)
        for command, kind in (("bench_cancel_async", "async generator"), ("bench_cancel_sync", "sync generator")):
            ms, missing = await _cancel_latency(
                sb, lambda t, c=command: bridge_request(c, {"tag": t}),
                lambda t: bridge_request("bench_probe", {"tag": t}), reps)
            note = f"{missing} of {reps} finalizers not seen within 3 s" if missing else ""
            rows.append(Row("Cancel to finalizer", f"{kind}: p50", "ms", median(ms), median(bare_ms), note=note))
            rows.append(Row("Cancel to finalizer", f"{kind}: p95", "ms", pct(ms, 95), pct(bare_ms, 95)))
            rows.append(Row("Cancel to finalizer", f"{kind}: max", "ms", max(ms, default=float("nan")),
                            max(bare_ms, default=float("nan"))))
    return rows


async def _lead(stub, stream_req, probe_req, reads: int, pause: float) -> int:
    call = stub.ExecuteStream(stream_req)
    for _ in range(reads):
        await call.read()
        await asyncio.sleep(pause)
    await asyncio.sleep(0.1)  # let the producer run as far ahead as it can
    response = await stub.Execute(probe_req)
    call.cancel()
    return int(response.result["produced"]) - reads


async def producer_lead(bridge: Server, bare: Server) -> list[Row]:
    """How far a producer runs ahead of a reader taking 10 ms per chunk. The client
    turns off gRPC's BDP probing so its receive window stays at 64 KiB: with it on,
    the transport alone buffers megabytes and hides the bridge's own bound."""
    rows = []
    options = [*OPTIONS, ("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(bridge.target, options=options) as cb, \
            grpc.aio.insecure_channel(bare.target, options=options) as c0:
        sb, s0 = pb_grpc.SnakepitBridgeStub(cb), pb_grpc.SnakepitBridgeStub(c0)
        for size in (100, 65_536):
            tag = uuid.uuid4().hex
            lead_b = await _lead(sb, bridge_request("bench_lead", {"tag": tag, "size": size}),
                                 bridge_request("bench_probe", {"tag": tag}), 20, 0.01)
            tag = uuid.uuid4().hex
            lead_0 = await _lead(s0, bare_request("lead_probe", {"tag": tag, "size": size}),
                                 bare_request("probe", {"tag": tag}), 20, 0.01)
            rows.append(Row("Producer lead under a slow reader (10 ms per chunk)",
                            f"{size:,}-byte chunks, sync generator", "chunks ahead", lead_b, lead_0,
                            note="includes what gRPC's 64 KiB window holds"))
    return rows
