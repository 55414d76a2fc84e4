"""Handlers for the core conformance tests, loaded with ``--adapter tests.handlers_core``."""
from __future__ import annotations

import asyncio
import gc
import time
import weakref

from snakepit_bridge import command
from snakepit_bridge.errors import BridgeError


@command("boom")
def boom(args):
    raise ValueError(args.get("message", "boom"))


@command("empty_stream")
def empty_stream(args):
    return
    yield  # a generator that yields nothing


@command("fail_midway")
async def fail_midway(args):
    for i in range(args.get("before", 2)):
        yield {"i": i}
    raise RuntimeError("stream broke")


@command("gc_state")
def gc_state(args):
    """How many objects the worker froze at start-up, and whether a cycle a
    call makes is still collected."""

    class Node:
        pass

    node = Node()
    node.self = node
    gone = weakref.ref(node)
    del node
    gc.collect()
    return {"frozen": gc.get_freeze_count(), "cycle_collected": gone() is None}


@command("whoami")
def whoami(args, ctx):
    return {"session_id": ctx.session.id if ctx.session else None, "request_id": ctx.request_id}


@command("whoami_now", inline=True)
def whoami_now(args, ctx):
    """whoami, answered inline (gRPC's fast path when outside a session)."""
    return {"session_id": ctx.session.id if ctx.session else None, "request_id": ctx.request_id,
            "remaining": ctx.time_remaining()}


@command("sleep_sync")
def sleep_sync(args):
    time.sleep(args.get("seconds", 1.0))
    return {"slept": args.get("seconds", 1.0)}


@command("sleep_async")
async def sleep_async(args):
    await asyncio.sleep(args.get("seconds", 1.0))
    return {"slept": args.get("seconds", 1.0)}


@command("long_stream")
async def long_stream(args):
    for i in range(args.get("count", 1000)):
        await asyncio.sleep(args.get("interval", 0.01))
        yield {"i": i}


@command("sync_stream")
def sync_stream(args):
    for i in range(args.get("count", 3)):
        yield {"i": i}


@command("types")
def types(args):
    return {"str": "hello", "int": 42, "float": 1.5, "bool": True, "none": None,
            "list": [1, "a"], "map": {"k": "v"}, "bytes": b"\x00\xffraw"}


@command("kinds")
def kinds(args):
    return {k: type(v).__name__ for k, v in args.items()}


@command("exit_sync")
def exit_sync(args):
    """sys.exit() in a handler (library code does this): fails the call, not the worker."""
    raise SystemExit(args.get("code", 3))


@command("exit_async")
async def exit_async(args):
    await asyncio.sleep(0)
    raise SystemExit(args.get("code", 4))


@command("exit_stream")
def exit_stream(args):
    yield {"i": 0}
    raise SystemExit(args.get("code", 5))


@command("bad_details")
def bad_details(args):
    """Details that no codec encodes: the error must still arrive, without them."""
    raise BridgeError("nope", details={"obj": object()})


@command("bad_details_stream")
def bad_details_stream(args):
    yield {"i": 0}
    raise BridgeError("nope", details={"obj": object()})
