"""Handlers for the session tests, loaded with ``--adapter tests.handlers_sessions``.

Close hooks append one line ``<session_id> <resource>`` to the file named by
the ``record`` argument, so a test can read back, after expiry, eviction, an
explicit end or a SIGTERM, which hooks ran and how often.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from snakepit_bridge import command
from snakepit_bridge.context import Context


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:  # O_APPEND: one whole line per write
        f.write(line + "\n")


class _Recorded:
    """A resource whose close() records itself."""

    def __init__(self, record: str, session_id: str, name: str, fail: bool = False) -> None:
        self.record, self.session_id, self.name, self.fail = record, session_id, name, fail

    def close(self) -> None:
        _append(self.record, f"{self.session_id} {self.name}")
        if self.fail:
            raise RuntimeError(f"close hook {self.name} failed on purpose")


@command("open_resource")
def open_resource(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Register resource ``name`` whose close hook records itself in ``record``
    (and then raises, with ``fail``)."""
    session = ctx.require_session()
    name = args.get("name", "res")
    session.add_resource(name, _Recorded(args["record"], session.id, name, bool(args.get("fail"))),
                         size=int(args.get("size", 0)))
    return {"resources": sorted(session.resources)}


def _maybe_resource(args: dict[str, Any], ctx: Context) -> None:
    # In the same call that then stays in flight, so that no idle gap exists
    # between registering the resource and the session becoming busy.
    if "record" in args:
        session = ctx.require_session()
        session.add_resource("r", _Recorded(args["record"], session.id, "r"))


@command("incr")
async def incr(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Read-modify-write of ``state["n"]`` with a yield in between: without
    the session lock, concurrent calls in one session lose updates."""
    session = ctx.require_session()
    n = session.state.get("n", 0)
    await asyncio.sleep(float(args.get("pause", 0.001)))
    session.state["n"] = n + 1
    return {"n": n + 1}


@command("slow_incr")
def slow_incr(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """``incr`` that sleeps ``pause`` s (default 0.5) without looking at
    ``ctx.cancelled``: cut off at its deadline, it still finishes its write."""
    session = ctx.require_session()
    n = session.state.get("n", 0)
    time.sleep(float(args.get("pause", 0.5)))
    session.state["n"] = n + 1
    return {"n": n + 1}


_gates: dict[str, asyncio.Event] = {}
_entered: set[str] = set()


@command("hold")
async def hold(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Stay in flight until ``release`` opens gate ``gate`` (or ``timeout`` s
    pass); with ``record``, first register resource ``r`` like open_resource."""
    gate = args["gate"]
    _maybe_resource(args, ctx)
    _entered.add(gate)
    event = _gates.setdefault(gate, asyncio.Event())
    try:
        await asyncio.wait_for(event.wait(), float(args.get("timeout", 10.0)))
    finally:
        _entered.discard(gate)
    return {"released": gate, "session_id": ctx.session.id if ctx.session else None}


@command("held")
async def held(args: dict[str, Any]) -> dict[str, Any]:
    """Whether a ``hold`` call on ``gate`` is in flight."""
    return {"held": args["gate"] in _entered}


@command("release")
async def release(args: dict[str, Any]) -> dict[str, Any]:
    _gates.setdefault(args["gate"], asyncio.Event()).set()
    return {"released": args["gate"]}


@command("session_counter_stream")
async def session_counter_stream(args: dict[str, Any], ctx: Context):
    """Streams ``count`` chunks, adding each to ``state["streamed"]``."""
    session = ctx.require_session()
    for i in range(int(args.get("count", 3))):
        session.state["streamed"] = session.state.get("streamed", 0) + 1
        yield {"i": i, "session_id": session.id, "streamed": session.state["streamed"]}


@command("hold_stream")
async def hold_stream(args: dict[str, Any], ctx: Context):
    """Yields one chunk, then stays open until ``release`` opens ``gate``
    (with ``record``, registers resource ``r`` first)."""
    gate = args["gate"]
    _maybe_resource(args, ctx)
    _entered.add(gate)
    try:
        yield {"started": gate}
        await asyncio.wait_for(_gates.setdefault(gate, asyncio.Event()).wait(), float(args.get("timeout", 10.0)))
    finally:
        _entered.discard(gate)
    yield {"released": gate}
