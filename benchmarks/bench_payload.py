"""Payload echo from 1 KB to 100 MB per encoding, against a bare servicer.

For each kind of value and size:

* ``codec ms``: the bridge's own encode + decode of the value, in-process
  (``snakepit_bridge.codecs``), i.e. the least the server must do per call;
* ``bridge ms``: ``bench_echo`` round trip with the request encoded beforehand
  and the response not decoded, so client codec time stays out;
* ``bare ms``: the very same request on the bare servicer, which hands the
  bytes back untouched;
* ``e2e ms``: what a Python caller sees: encode, round trip, decode.

JSON values go to a second bridge started with a threshold above every size
(JSON everything, Snakepit 0.3 style); every other kind goes to the default
bridge with ``accept_encodings`` naming every binary encoding (as the Python
client sends), so its answers follow the 10 KB rule (the ``wire`` column).

:func:`json_answer` prices the answer a Snakepit 0.3 caller gets for a 10 MB
value (it names no encodings: JSON at any size) against the target "no more
than 1.2x ``orjson.dumps`` of the value on top of the bare servicer's echo".
Run as a module (:func:`main`), it compares that answer across checkouts
(``--bridge NAME=SCRIPT``), or runs the in-process pieces rows (``--pieces``).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from typing import Any

import grpc
import msgpack
import numpy as np
import orjson

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc
from snakepit_bridge.client import decode_values
from snakepit_bridge.codecs import decode_value, encode_value, npy

from .procs import Server
from .report import PayloadRow, Row, median

LIMIT = 100 * 1024 * 1024
OPTIONS = [("grpc.max_receive_message_length", LIMIT), ("grpc.max_send_message_length", LIMIT)]
SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
KINDS = ("json", "npy", "raw", "msgpack", "utf8")
JSON_EVERYTHING = 2_000_000_000  # --binary-threshold for the JSON-everything bridge
ACCEPT_ALL = ("npy", "raw", "utf8", "msgpack")  # what snakepit_bridge.client.Client asks for
KIND_LABEL = {"json": "JSON list of floats", "npy": "numpy float64 (npy)", "raw": "bytes (raw)",
              "msgpack": "list of floats (msgpack)", "utf8": "str (utf8)"}


def reps_for(size: int, quick: bool) -> int:
    reps = {1_000: 300, 10_000: 300, 100_000: 100, 1_000_000: 20, 10_000_000: 8, 100_000_000: 2}[size]
    return max(1, reps // 4) if quick else reps


def make_value(kind: str, size: int):
    rng = np.random.default_rng(size)
    if kind == "npy":
        return rng.random(size // 8)
    if kind == "raw":
        return b"x" * size
    if kind == "utf8":
        return "x" * size
    if kind == "msgpack":
        return rng.random(size // 9).tolist()  # 9 bytes per float64 in MessagePack
    return rng.random(max(1, size // 20)).tolist()  # ~20 JSON characters per random float


def encode_arg(kind: str, value) -> tuple[bytes, str | None]:
    """How a client sends the value: explicit encodings, except JSON as Snakepit 0.3 sends it."""
    if kind == "npy":
        return npy.dumps(value), "npy"  # the package's own writer: what snakepit_bridge.client sends
    if kind == "raw":
        return value, "raw"
    if kind == "utf8":
        return value.encode(), "utf8"
    if kind == "msgpack":
        return msgpack.packb(value, use_bin_type=True), "msgpack"
    return orjson.dumps(value), None


def request(kind: str, value) -> pb.ExecuteRequest:
    data, enc = encode_arg(kind, value)
    return pb.ExecuteRequest(command="bench_echo", args={"data": data},
                             arg_encodings={"data": enc} if enc else {}, request_id="bench",
                             accept_encodings=ACCEPT_ALL if enc else ())


def _time_pair(bridge_stub, bridge: Server, bare_stub, bare: Server, req, reps: int):
    """Bridge and bare calls take turns, so a change in the machine's load hits
    both alike. Server CPU is read around the whole loop: each server idles
    while the other works."""
    times = {"bridge": [], "bare": []}
    cpu = {"bridge": bridge.cpu(), "bare": bare.cpu()}
    response = None
    for _ in range(reps):
        for key, stub in (("bridge", bridge_stub), ("bare", bare_stub)):
            t0 = time.perf_counter()
            r = stub.Execute(req, timeout=120)
            times[key].append((time.perf_counter() - t0) * 1000)
            if not r.success:
                raise RuntimeError(f"echo failed: {r.error[:300]}")
            if key == "bridge":
                response = r
            del r
    return (median(times["bridge"]), (bridge.cpu() - cpu["bridge"]) / reps * 1000,
            median(times["bare"]), (bare.cpu() - cpu["bare"]) / reps * 1000, response)


def _e2e(stub, kind: str, value, reps: int, bare: bool = False) -> float:
    """Encode, call, decode. The bare servicer names no encodings: decode its answer as what was sent."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        req = request(kind, value)
        response = stub.Execute(req, timeout=120)
        decode_values(response.result, req.arg_encodings if bare else response.encodings)
        times.append((time.perf_counter() - t0) * 1000)
    return median(times)


def _codec(kind: str, value, reps: int) -> float:
    threshold = JSON_EVERYTHING if kind == "json" else 10_240
    times = []
    for _ in range(max(1, min(reps, 20))):
        t0 = time.perf_counter()
        data, enc = encode_value(value, threshold)
        decode_value(data, enc)
        times.append((time.perf_counter() - t0) * 1000)
    return median(times)


def payload(bridge: Server, json_bridge: Server, bare: Server, quick: bool,
            sizes: tuple[int, ...] = SIZES) -> list[PayloadRow]:
    rows = []
    with grpc.insecure_channel(bridge.target, OPTIONS) as cb, \
            grpc.insecure_channel(json_bridge.target, OPTIONS) as cj, \
            grpc.insecure_channel(bare.target, OPTIONS) as c0:
        stubs = {"bridge": pb_grpc.SnakepitBridgeStub(cb), "json": pb_grpc.SnakepitBridgeStub(cj),
                 "bare": pb_grpc.SnakepitBridgeStub(c0)}
        for size in sizes:
            reps = reps_for(size, quick)
            for kind in KINDS:
                server, stub = (json_bridge, stubs["json"]) if kind == "json" else (bridge, stubs["bridge"])
                value = make_value(kind, size)
                req = request(kind, value)
                if size <= 10_000_000:  # warm up (connection windows, allocator)
                    stub.Execute(req, timeout=120)
                    stubs["bare"].Execute(req, timeout=120)
                bridge_ms, bridge_cpu, bare_ms, bare_cpu, response = _time_pair(stub, server, stubs["bare"], bare,
                                                                                  req, reps)
                wire = response.encodings.get("data", "json")
                del response
                slow = size >= 100_000_000  # client-side codecs of 100 MB lists take seconds: one sample
                e2e_ms = _e2e(stub, kind, value, 1 if slow else reps)
                codec_ms = _codec(kind, value, 1 if slow else reps)
                rows.append(PayloadRow(KIND_LABEL[kind], size, len(req.args["data"]), wire, codec_ms, bridge_ms,
                                       bare_ms, e2e_ms, bridge_cpu, bare_cpu, reps))
                del req, value
                gc.collect()
    return rows


def json_answer(bridge: Server, bare: Server, quick: bool, size: int = 10_000_000) -> list[Row]:
    """A Snakepit 0.3 caller's 10 MB JSON answer (a list of floats, echoed by a
    request that names no encodings) on the default bridge vs the bare
    servicer's echo of the same request. The bridge also parses the 10 MB
    request (the bare servicer hands bytes back), so the answer's own cost is
    ``bridge - bare - orjson.loads``, which the target bounds by 1.2 x
    ``orjson.dumps`` of the value. Each round times all four (the two calls,
    then loads and dumps in-process), so a change in the machine's load hits
    them alike; the figures are medians of the rounds."""
    m, cpu, data_len, reps = answer_rounds({"bridge": bridge}, bare, 3 if quick else 10, size)
    section = f"{size / 1e6:g} MB JSON answer to a Snakepit 0.3 caller (list of floats, no accept_encodings)"
    return [
        Row(section, "echo round trip", "ms", m["bridge"], m["bare"], bridge_cpu=cpu["bridge"], bare_cpu=cpu["bare"],
            cpu_unit="ms/call", note=f"{data_len / 1e6:.1f} MB each way; {reps} rounds"),
        Row(section, "answer's cost: bridge - bare - orjson.loads", "ms", m["answer:bridge"], 1.2 * m["dumps"],
            note=f"bare column: the target, 1.2 x orjson.dumps ({m['dumps']:.1f} ms); "
                 f"orjson.loads {m['loads']:.1f} ms"),
        # CPU time moves less with the machine's load than wall time does.
        Row(section, "answer's server CPU: bridge - bare - orjson.loads", "ms CPU",
            cpu["bridge"] - cpu["bare"] - m["loads_cpu"], 1.2 * m["dumps_cpu"],
            note=f"bare column: the target, 1.2 x orjson.dumps ({m['dumps_cpu']:.1f} ms CPU); "
                 f"orjson.loads {m['loads_cpu']:.1f} ms CPU"),
    ]


def answer_rounds(bridges: dict[str, Server], bare: Server, reps: int, size: int = 10_000_000
                  ) -> tuple[dict[str, float], dict[str, float], int, int]:
    """:func:`json_answer`'s rounds for one or more bridges (an A/B of commits:
    :func:`main`): each round calls every bridge and the bare servicer in
    turn, then times ``orjson.loads`` and ``orjson.dumps`` in-process.
    Returns medians (``<name>``, ``bare``, ``loads``, ``dumps``, ``loads_cpu``,
    ``dumps_cpu``, ``answer:<name>`` = name - bare - loads of the same round),
    server CPU per call (ms) by name, the argument's size and the rounds."""
    value = make_value("json", size)
    req = request("json", value)
    assert not req.accept_encodings
    data = req.args["data"]
    servers = {**bridges, "bare": bare}
    rounds: dict[str, list[float]] = {key: [] for key in (*servers, "loads", "dumps", "loads_cpu", "dumps_cpu",
                                                          *(f"answer:{name}" for name in bridges))}
    with contextlib.ExitStack() as stack:
        stubs = {name: pb_grpc.SnakepitBridgeStub(stack.enter_context(grpc.insecure_channel(s.target, OPTIONS)))
                 for name, s in servers.items()}
        for name, stub in stubs.items():  # warm up
            response = stub.Execute(req, timeout=120)
            if name != "bare" and response.encodings:
                raise RuntimeError(f"a 0.3 caller got binary values: {dict(response.encodings)}")
            del response
        cpu = {name: s.cpu() for name, s in servers.items()}
        for _ in range(reps):
            for name, stub in stubs.items():
                t0 = time.perf_counter()
                r = stub.Execute(req, timeout=120)
                rounds[name].append((time.perf_counter() - t0) * 1000)
                if not r.success:
                    raise RuntimeError(f"echo failed: {r.error[:300]}")
                del r
            t0, c0 = time.perf_counter(), time.thread_time()
            decoded = orjson.loads(data)
            t1, c1 = time.perf_counter(), time.thread_time()
            orjson.dumps(decoded)
            t2, c2 = time.perf_counter(), time.thread_time()
            del decoded
            rounds["loads"].append((t1 - t0) * 1000)
            rounds["dumps"].append((t2 - t1) * 1000)
            rounds["loads_cpu"].append((c1 - c0) * 1000)
            rounds["dumps_cpu"].append((c2 - c1) * 1000)
            for name in bridges:
                rounds[f"answer:{name}"].append(rounds[name][-1] - rounds["bare"][-1] - rounds["loads"][-1])
        server_cpu = {name: (s.cpu() - cpu[name]) / reps * 1000 for name, s in servers.items()}
    return {key: median(values) for key, values in rounds.items()}, server_cpu, len(data), reps


def json_pieces(quick: bool, size: int = 10_000_000) -> list[Row]:
    """The chunked JSON encoder the bridge uses off the event loop
    (``codecs.values.dumps_json`` in a worker thread) against one
    ``orjson.dumps`` call, in-process, on ~10 MB of JSON two ways: a list of
    floats (orjson's fast case) and of strings that need escaping (its slow
    one); and the chunked MessagePack encoder against one ``packb`` call. Rows: the encoder's thread CPU time (what pieces cost), and the
    worst lag of an event loop ticking every 1 ms while a worker thread
    encodes (what one call holding the GIL costs everyone else); rounds
    interleave both, figures are medians."""
    import asyncio
    import concurrent.futures

    from snakepit_bridge.codecs import values

    floats = make_value("json", size)
    escaped = ['"\\\n\t' * 500 + str(i) for i in range(size // 4000)]
    reps = 3 if quick else 7
    rows: list[Row] = []
    pool = concurrent.futures.ThreadPoolExecutor(1, initializer=values.encode_in_pieces)  # as dispatch's threads

    def cpu(encode: Any, value: Any) -> float:
        t0 = time.thread_time()
        encode(value)
        return (time.thread_time() - t0) * 1000

    async def lag(encode: Any, value: Any) -> float:
        work = asyncio.get_running_loop().run_in_executor(pool, encode, value)
        worst = 0.0
        while not work.done():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t0)
        await work
        return worst * 1000

    async def rounds(value: Any, pieces: Any, one: Any) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"pieces": [], "one": [], "pieces_lag": [], "one_lag": []}
        for _ in range(reps):
            out["pieces"].append(await asyncio.get_running_loop().run_in_executor(pool, cpu, pieces, value))
            out["one"].append(cpu(one, value))
            out["pieces_lag"].append(await lag(pieces, value))
            out["one_lag"].append(await lag(one, value))
        return out

    cases = (("list of floats", floats, values.dumps_json, orjson.dumps),
             ("list of escaped strings", escaped, values.dumps_json, orjson.dumps),
             ("list of floats as MessagePack", floats, values._dumps_msgpack, values._dumps_msgpack_whole))
    try:
        for label, value, pieces, one in cases:
            m = {key: median(v) for key, v in asyncio.run(rounds(value, pieces, one)).items()}
            section = (f"~{size / 1e6:g} MB of JSON (MessagePack) off the event loop, in pieces vs one "
                       "orjson (msgpack) call, in-process")
            rows.append(Row(section, f"{label}: encoder thread CPU, pieces vs one call", "ms CPU", m["pieces"],
                            m["one"], note=f"{len(one(value)) / 1e6:.1f} MB; {reps} rounds"))
            rows.append(Row(section, f"{label}: worst event-loop lag while a thread encodes, pieces vs one call",
                            "ms", m["pieces_lag"], m["one_lag"], note="the loop ticks every 1 ms"))
    finally:
        pool.shutdown()
    return rows


def json_baseline(bridge: Server, json_bridge: Server, bare: Server, quick: bool) -> tuple[list[Row], dict]:
    """The same 1 MiB of floats (131,072 float64 values) end to end three ways,
    and :func:`json_answer`'s rows."""
    values = np.random.default_rng(7).random(131_072)
    reps = 5 if quick else 30
    figures = {}
    rows = []
    section = "Same 1 MiB of floats (131,072 values), client encode + echo + client decode"
    with grpc.insecure_channel(bridge.target, OPTIONS) as cb, \
            grpc.insecure_channel(json_bridge.target, OPTIONS) as cj, \
            grpc.insecure_channel(bare.target, OPTIONS) as c0:
        sb, sj, s0 = (pb_grpc.SnakepitBridgeStub(c) for c in (cb, cj, c0))
        cases = (("JSON everything (Snakepit 0.3 style)", "json", sj, values.tolist()),
                 ("list as MessagePack", "msgpack", sb, values.tolist()),
                 ("numpy array as npy", "npy", sb, values))
        for _, kind, stub, value in cases:
            _e2e(stub, kind, value, 2)
        times: dict[str, list[float]] = {kind: [] for _, kind, _, _ in cases}
        bare_times: dict[str, list[float]] = {kind: [] for _, kind, _, _ in cases}
        for _ in range(reps):  # every case takes its turn in each round: load changes hit all alike
            for _, kind, stub, value in cases:
                times[kind].append(_e2e(stub, kind, value, 1))
                bare_times[kind].append(_e2e(s0, kind, value, 1, bare=True))
        for label, kind, _, _ in cases:
            figures[kind] = median(times[kind])
            rows.append(Row(section, label, "ms", figures[kind], median(bare_times[kind]),
                            note="bare: same bytes handed back"))
    rows += json_answer(bridge, bare, quick)
    rows += json_pieces(quick)
    return rows, figures


def main() -> None:
    """An interleaved A/B of the 10 MB JSON answer (and, in-process, of the
    piece encoder: ``--pieces``), outside ``make bench``::

        .venv/bin/python -m benchmarks.bench_payload --bridge base=/tmp/base/grpc_bridge.py --rounds 10
        .venv/bin/python -m benchmarks.bench_payload --pieces

    Every bridge runs ``--adapter benchmarks.handlers`` (a checkout's own, found
    beside its script); this checkout's bridge is always one of them."""
    from .procs import BRIDGE, bare_grpc_cmd

    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0] if main.__doc__ else None)
    p.add_argument("--bridge", action="append", default=[], metavar="NAME=SCRIPT",
                   help="another checkout's grpc_bridge.py (repeatable)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--pieces", action="store_true", help="only the in-process piece encoder rows")
    ns = p.parse_args()
    if ns.pieces:
        for row in json_pieces(ns.rounds < 7):
            print(f"{row.name}: {row.bridge:.2f} vs {row.bare:.2f} {row.unit} ({row.note})", flush=True)
        return
    scripts = {"this checkout": str(BRIDGE)}
    for spec in ns.bridge:
        name, _, script = spec.partition("=")
        scripts[name] = script
    with contextlib.ExitStack() as stack:
        bridges = {name: stack.enter_context(Server([sys.executable, script, "--port", "0",
                                                     "--adapter", "benchmarks.handlers"]))
                   for name, script in scripts.items()}
        bare = stack.enter_context(Server(bare_grpc_cmd("--port", "0")))
        m, cpu, data_len, reps = answer_rounds(bridges, bare, ns.rounds)
    print(f"10 MB JSON answer ({data_len / 1e6:.1f} MB each way, {reps} rounds): target 1.2 x orjson.dumps = "
          f"{1.2 * m['dumps']:.1f} ms ({1.2 * m['dumps_cpu']:.1f} ms CPU); orjson.loads {m['loads']:.1f} ms "
          f"({m['loads_cpu']:.1f} ms CPU); bare echo {m['bare']:.1f} ms, {cpu['bare']:.1f} ms CPU/call")
    for name in bridges:
        print(f"{name:>16}: echo {m[name]:6.1f} ms, answer {m['answer:' + name]:6.1f} ms; server CPU "
              f"{cpu[name]:6.1f} ms/call, answer {cpu[name] - cpu['bare'] - m['loads_cpu']:6.1f} ms CPU", flush=True)


if __name__ == "__main__":
    main()
