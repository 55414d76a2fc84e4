"""Bridge-side benchmark handlers: ``grpc_bridge.py --adapter benchmarks.handlers``.

Each mirrors a workload of the bare servicer (:mod:`benchmarks.bare_grpc`), so
the difference between the two is what the bridge itself costs.
"""
from __future__ import annotations

import time
from typing import Any

from snakepit_bridge import command

#: tag -> time.monotonic_ns() when the generator's ``finally`` ran.
FINALIZED: dict[str, int] = {}
#: tag -> how many chunks the generator has produced so far.
PRODUCED: dict[str, int] = {}


@command("bench_echo")
def bench_echo(args: dict[str, Any]) -> dict[str, Any]:
    """Hands the decoded arguments back; each value is encoded again on the way out."""
    return args


@command("bench_stream")
async def bench_stream(args: dict[str, Any]):
    """``count`` empty chunks from an async generator."""
    for _ in range(args.get("count", 0)):
        yield None


@command("bench_stream_sync")
def bench_stream_sync(args: dict[str, Any]):
    """``count`` empty chunks from a sync generator (runs in a worker thread)."""
    for _ in range(args.get("count", 0)):
        yield None


@command("bench_cancel_async")
async def bench_cancel_async(args: dict[str, Any]):
    """Yields empty chunks until closed; records when its ``finally`` ran."""
    try:
        while True:
            yield None
    finally:
        FINALIZED[args["tag"]] = time.monotonic_ns()


@command("bench_cancel_sync")
def bench_cancel_sync(args: dict[str, Any]):
    """As :func:`bench_cancel_async`, from a worker thread."""
    try:
        while True:
            yield None
    finally:
        FINALIZED[args["tag"]] = time.monotonic_ns()


@command("bench_lead")
def bench_lead(args: dict[str, Any]):
    """Chunks of ``size`` bytes forever, counting how many were produced."""
    tag, payload = args["tag"], b"x" * args.get("size", 0)
    i = 0
    while True:
        i += 1
        PRODUCED[tag] = i
        yield {"payload": payload}


@command("bench_probe")
def bench_probe(args: dict[str, Any]) -> dict[str, Any]:
    tag = args["tag"]
    return {"finalized": FINALIZED.get(tag, 0), "produced": PRODUCED.get(tag, 0)}


@command("bench_pull_work")
def bench_pull_work(args: dict[str, Any]):
    """``count`` small chunks, each after ``work_ms`` (default 1) of work (a sleep:
    the producer takes time per item without taking a core from the client)."""
    delay = args.get("work_ms", 1) / 1000
    for i in range(args.get("count", 0)):
        time.sleep(delay)
        yield {"i": i}
