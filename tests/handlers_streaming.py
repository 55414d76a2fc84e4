"""Test handlers for the streaming tests, loaded with ``--adapter tests.handlers_streaming``.

Every generator here records, per ``tag`` argument, how many items it produced,
when (``time.monotonic()``, comparable across processes on Linux) its finalizer
ran, and how many finalizers ran in all; ``t_state`` reports them. The tests
use these to prove laziness, the producer's lead, and that cancellation closes
generators.
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from snakepit_bridge import command

_lock = threading.Lock()
_produced: dict[str, int] = {}
_closed_at: dict[str, float] = {}
_totals = {"started": 0, "finalized": 0}


def _start(tag: str) -> None:
    with _lock:
        _produced[tag] = 0
        _totals["started"] += 1


def _made(tag: str) -> None:
    with _lock:
        _produced[tag] = _produced.get(tag, 0) + 1


def _finalized(tag: str) -> None:
    with _lock:
        _closed_at[tag] = time.monotonic()
        _totals["finalized"] += 1


def _n(args: dict[str, Any]) -> int:
    return int(args.get("n", 1_000_000))


@command("t_state")
def t_state(args: dict[str, Any]) -> dict[str, Any]:
    """Counters for ``tag`` (or only the totals), and the process's thread count."""
    tag = args.get("tag", "")
    with _lock:
        return {
            "produced": _produced.get(tag, 0),
            "closed_at": _closed_at.get(tag, 0.0),
            "closed": tag in _closed_at,
            "started": _totals["started"],
            "finalized": _totals["finalized"],
            "threads": threading.active_count(),
        }


@command("t_count_sync")
def t_count_sync(args: dict[str, Any]):
    """``n`` items ``{"i": i}`` (default 1,000,000), ``delay`` seconds apart, ``size`` bytes of padding."""
    tag, n, delay = args.get("tag", ""), _n(args), float(args.get("delay", 0))
    pad = "x" * int(args.get("size", 0))
    _start(tag)
    try:
        for i in range(n):
            if delay:
                time.sleep(delay)
            _made(tag)
            yield {"i": i, "pad": pad} if pad else {"i": i}
    finally:
        _finalized(tag)


@command("t_count_async")
async def t_count_async(args: dict[str, Any]):
    """The async twin of ``t_count_sync``."""
    tag, n, delay = args.get("tag", ""), _n(args), float(args.get("delay", 0))
    pad = "x" * int(args.get("size", 0))
    _start(tag)
    try:
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            _made(tag)
            yield {"i": i, "pad": pad} if pad else {"i": i}
    finally:
        _finalized(tag)


@command("t_swallow_async")
async def t_swallow_async(args: dict[str, Any]):
    """Swallows its cancellation and keeps working ``linger`` s before it yields again."""
    tag, linger = args.get("tag", ""), float(args.get("linger", 1.0))
    _start(tag)
    try:
        i = 0
        while True:
            try:
                await asyncio.sleep(0.005)
            except asyncio.CancelledError:
                await asyncio.sleep(linger)  # swallowed on purpose: the bridge must cope
            _made(tag)
            i += 1
            yield {"i": i}
    finally:
        _finalized(tag)


@command("t_swallow_sync")
def t_swallow_sync(args: dict[str, Any]):
    """Catches GeneratorExit and ignores ``ctx`` for ``linger`` s, in a worker thread."""
    tag, linger = args.get("tag", ""), float(args.get("linger", 1.0))
    _start(tag)
    try:
        i = 0
        while True:
            try:
                time.sleep(0.005)
                _made(tag)
                i += 1
                yield {"i": i}
            except GeneratorExit:
                time.sleep(linger)  # refuses to stop promptly
                raise
    finally:
        _finalized(tag)


@command("t_errors")
def t_errors(args: dict[str, Any], ctx):
    """``n`` items; item ``bad`` is a per-item error; raises ValueError at ``raise_at`` if given."""
    n, bad, raise_at = int(args.get("n", 5)), int(args.get("bad", 3)), args.get("raise_at")
    for i in range(n):
        if raise_at is not None and i == int(raise_at):
            raise ValueError(f"boom at {i}")
        if i == bad:
            yield ctx.error("bad item", item=i)
        else:
            yield {"i": i}


@command("t_errors_async")
async def t_errors_async(args: dict[str, Any], ctx):
    n, bad, raise_at = int(args.get("n", 5)), int(args.get("bad", 3)), args.get("raise_at")
    for i in range(n):
        if raise_at is not None and i == int(raise_at):
            raise ValueError(f"boom at {i}")
        yield ctx.error("bad item", item=i) if i == bad else {"i": i}


@command("t_empty_sync")
def t_empty_sync(args: dict[str, Any]):
    return
    yield  # a generator that yields nothing


@command("t_empty_async")
async def t_empty_async(args: dict[str, Any]):
    return
    yield


@command("t_final")
async def t_final(args: dict[str, Any], ctx):
    """Two items, then a summary sent with ``ctx.final``; the code after it never runs."""
    yield {"i": 0}
    yield {"i": 1}
    yield ctx.final(total=2)
    yield {"never": True}


@command("t_progress")
def t_progress(args: dict[str, Any], ctx):
    total = int(args.get("total", 4))
    for done in range(1, total + 1):
        yield ctx.progress(done, total, message=f"step {done}", stage="work")
    yield ctx.final(done=True)


@command("t_slow_sync")
def t_slow_sync(args: dict[str, Any], ctx):
    """A unary handler that takes ``seconds`` (default 5), waking early if cancelled."""
    tag = args.get("tag", "")
    _start(tag)
    try:
        cancelled = ctx.wait(float(args.get("seconds", 5)))
        return {"cancelled": cancelled}
    finally:
        _finalized(tag)


@command("t_slow_async")
async def t_slow_async(args: dict[str, Any]):
    tag = args.get("tag", "")
    _start(tag)
    try:
        await asyncio.sleep(float(args.get("seconds", 5)))
        return {"slept": True}
    finally:
        _finalized(tag)


@command("t_sleepy_stream")
async def t_sleepy_stream(args: dict[str, Any]):
    """One item, then waits ``seconds`` before the next (for deadlines)."""
    tag = args.get("tag", "")
    _start(tag)
    try:
        yield {"i": 0}
        await asyncio.sleep(float(args.get("seconds", 5)))
        yield {"i": 1}
    finally:
        _finalized(tag)


@command("t_sleepy_stream_sync")
def t_sleepy_stream_sync(args: dict[str, Any], ctx):
    tag = args.get("tag", "")
    _start(tag)
    try:
        yield {"i": 0}
        ctx.wait(float(args.get("seconds", 5)))
        yield {"i": 1}
    finally:
        _finalized(tag)
