"""In-process dispatch: what one call costs the core, without any transport.

``Dispatcher.call`` on a trivial handler (encoding its result as the gRPC
transport does) next to calling the handler directly. Shows where a call's
fixed cost goes: the core itself, handing a sync handler to a worker thread,
and the per-call log line (measured with logging to a null stream).

Typed commands: the same 5-argument inline command declared with a
dataclass (decoded toward its types and checked by msgspec) next to it
untyped (a dict), from decoded args (as stdio delivers them) and from wire
bytes (as gRPC does, the typed one reading its str parameter raw). Rounds of
the two alternate, so machine load hits both alike; the goal is at most 10 µs
added per call.
"""
from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass

from snakepit_bridge import logging as bridge_logging
from snakepit_bridge.codecs import decode_map, encode_map
from snakepit_bridge.config import Config
from snakepit_bridge.dispatch import Dispatcher, Request
from snakepit_bridge.registry import Registry

from .report import Row


def _registry() -> Registry:
    registry = Registry()

    @registry.command("sync_ping")
    def sync_ping(args):
        return {"ok": True}

    @registry.command("async_ping")
    async def async_ping(args):
        return {"ok": True}

    @registry.command("inline_ping", inline=True)
    def inline_ping(args):
        return {"ok": True}

    return registry


@dataclass
class FiveArgs:
    name: str
    count: int
    ratio: float
    flag: bool = False
    tags: list[str] | None = None


FIVE = {"name": "resize", "count": 3, "ratio": 0.5, "flag": True, "tags": ["a", "b"]}
FIVE_WIRE = {"name": b"resize", "count": b"3", "ratio": b"0.5", "flag": b"true", "tags": b'["a","b"]'}


def _typed_registry() -> Registry:
    registry = Registry()

    @registry.command("untyped", inline=True)
    def untyped(args):
        return {"ok": args["count"]}

    @registry.command("typed", inline=True)
    def typed(args: FiveArgs):
        return {"ok": args.count}

    return registry


async def _five(dispatcher: Dispatcher, command: str, n: int, wire: bool) -> float:
    """µs per call, wall."""
    t0 = time.perf_counter()
    for _ in range(n):
        if wire:
            req = Request(command, {}, decode=lambda hints=None: decode_map(FIVE_WIRE, {}, hints), encode=encode_map)
        else:
            req = Request(command, dict(FIVE), encode=encode_map)
        result = await dispatcher.call(req)
        if not result.success:
            raise RuntimeError(result.error)
    return (time.perf_counter() - t0) / n * 1e6


async def _typed_rows(n: int) -> list[Row]:
    section = "Typed commands, in process (bare = the same 5-argument command untyped)"
    dispatcher = Dispatcher(_typed_registry(), Config(log_level="warning"))
    rows = []
    for wire, label in ((False, "decoded args (stdio)"), (True, "args from wire bytes (gRPC)")):
        await _five(dispatcher, "typed", 200, wire)  # builds the decoder, imports msgspec
        typed, untyped = [], []
        for _ in range(10):  # alternating rounds: load hits both alike
            typed.append(await _five(dispatcher, "typed", n // 10, wire))
            untyped.append(await _five(dispatcher, "untyped", n // 10, wire))
        t, u = sorted(typed)[len(typed) // 2], sorted(untyped)[len(untyped) // 2]
        rows.append(Row(section, f"5 typed args, {label}", "µs/call", t, u,
                        note=f"+{t - u:.1f} µs per call (goal: at most +10)"))
    await dispatcher.aclose()
    return rows


async def _calls(dispatcher: Dispatcher, command: str, n: int) -> tuple[float, float]:
    """(wall, cpu) microseconds per call."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        result = await dispatcher.call(Request(command, {}, encode=encode_map))
        if not result.success:
            raise RuntimeError(result.error)
    return (time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6


async def _direct(n: int) -> tuple[float, float]:
    def handler(args):
        return {"ok": True}

    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        encode_map(handler({}))
    return (time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6


async def _run(n: int) -> list[Row]:
    import sys

    section = "In-process dispatch (no transport; bare = calling the handler and encoding its result)"
    rows = []
    direct, _ = await _direct(n)
    real_stderr = sys.stderr
    for level, label in (("warning", "no log line"), ("info", "with the per-call log line")):
        sys.stderr = io.StringIO() if level == "info" else real_stderr  # the log line's cost, not its output
        try:
            bridge_logging.configure(level, "console")
            dispatcher = Dispatcher(_registry(), Config(log_level=level))
            for command, kind in (("inline_ping", "inline handler"), ("async_ping", "async handler"),
                                  ("sync_ping", "sync handler (worker thread)")):
                await _calls(dispatcher, command, 200)
                wall, cpu = await _calls(dispatcher, command, n)
                rows.append(Row(section, f"{kind}, {label}", "µs/call", wall, direct, bridge_cpu=cpu,
                                note=""))
            await dispatcher.aclose()
        finally:
            bridge_logging.flush()  # the held lines go to the null stream, not the terminal
            sys.stderr = real_stderr
            bridge_logging.configure("warning", "console")
    rows.extend(await _typed_rows(n))
    return rows


def dispatch(n: int) -> list[Row]:
    return asyncio.run(_run(n))
