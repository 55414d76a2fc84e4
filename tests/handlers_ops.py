"""Misbehaving and probing handlers for the operations tests, loaded with
``--adapter tests.handlers_ops``.

They block forever, swallow cancellation, spawn child processes, log a lot and
report the process's own view (environment, imported modules), so the fault
tests can drive the real process into each corner.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from snakepit_bridge import command

_forever = threading.Event()  # never set


@command("ops_block_forever")
def block_forever(args: dict[str, Any]) -> dict[str, Any]:
    """A sync handler that never returns and ignores its context."""
    _forever.wait()
    return {}


@command("ops_swallow_cancel")
async def swallow_cancel(args: dict[str, Any]) -> dict[str, Any]:
    """A coroutine that catches every cancellation and keeps going (forever)."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


@command("ops_hog_loop")
async def hog_loop(args: dict[str, Any]) -> dict[str, Any]:
    """A coroutine that blocks the event loop itself (a bug, but it happens);
    writes ``marker`` first so a test knows the loop is now stuck."""
    if "marker" in args:
        Path(args["marker"]).write_text("hogging")  # noqa: ASYNC240 -- blocking on purpose
    time.sleep(float(args.get("seconds", 3600)))  # noqa: ASYNC251 -- blocking the loop is the point
    return {}


@command("ops_stream_block")
def stream_block(args: dict[str, Any]):
    """A sync generator: one chunk, then blocks forever."""
    yield {"started": True}
    _forever.wait()


@command("ops_stream_swallow")
async def stream_swallow(args: dict[str, Any]):
    """An async generator: one chunk, then swallows cancellation forever."""
    yield {"started": True}
    while True:
        try:
            await asyncio.sleep(3600)
        except (asyncio.CancelledError, GeneratorExit):
            continue


@command("ops_sleep")
async def sleep(args: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``seconds`` (default 0.5), then answers."""
    await asyncio.sleep(float(args.get("seconds", 0.5)))
    return {"slept": float(args.get("seconds", 0.5))}


@command("ops_ticks")
async def ticks(args: dict[str, Any]):
    """``count`` chunks, ``interval`` seconds apart (async generator)."""
    for i in range(int(args.get("count", 10))):
        yield {"i": i}
        await asyncio.sleep(float(args.get("interval", 0.01)))


@command("ops_ticks_sync")
def ticks_sync(args: dict[str, Any], ctx):
    """``count`` chunks, ``interval`` seconds apart (sync generator in a thread)."""
    for i in range(int(args.get("count", 10))):
        yield {"i": i}
        ctx.wait(float(args.get("interval", 0.01)))


@command("ops_spawn_child")
def spawn_child(args: dict[str, Any]) -> dict[str, Any]:
    """Starts ``sleep 600`` (a grandchild of whoever started the bridge) and
    returns its pid; nobody ever waits for it."""
    child = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"pid": child.pid}


@command("ops_session_hook")
def session_hook(args: dict[str, Any], ctx) -> dict[str, Any]:
    """Registers a close hook on the call's session that writes ``marker``."""
    marker = Path(args["marker"])
    ctx.require_session().on_close(lambda: marker.write_text("closed"))
    return {"hooked": str(marker)}


@command("ops_session_hook_block")
def session_hook_block(args: dict[str, Any], ctx) -> dict[str, Any]:
    """Registers a close hook that never returns (only the watchdog ends that)."""
    ctx.require_session().on_close(_forever.wait)
    return {"hooked": True}


@command("ops_env")
def env(args: dict[str, Any]) -> dict[str, Any]:
    """The environment variables named in ``names``."""
    return {name: os.environ.get(name) for name in args.get("names", [])}


@command("ops_modules")
def modules(args: dict[str, Any]) -> dict[str, Any]:
    """Whether each module in ``names`` is imported in this process."""
    return {name: name in sys.modules for name in args.get("names", [])}


@command("ops_print")
def print_and_log(args: dict[str, Any], ctx) -> dict[str, Any]:
    """print()s and logs ``count`` lines: none of it may reach stdout."""
    for i in range(int(args.get("count", 10))):
        print(f"handler print {i}")
        ctx.log.info("handler log", i=i)
    return {"printed": int(args.get("count", 10))}


@command("ops_stdlib_log")
def stdlib_log(args: dict[str, Any]) -> dict[str, Any]:
    """Logs through the standard library, as a third-party library would."""
    import logging

    logging.getLogger("thirdparty.lib").warning("third-party warning %s", args.get("n", 1))
    return {}


@command("ops_pid")
def pid(args: dict[str, Any]) -> dict[str, Any]:
    return {"pid": os.getpid(), "ppid": os.getppid(), "time": time.time()}


@command("ops_gil_regex")
def gil_regex(args: dict[str, Any]) -> dict[str, Any]:
    """Holds the GIL inside C code for hours: stdlib ``re`` on a catastrophic
    pattern. With ``child``, first spawns a sleeping child (which must die too);
    writes ``marker`` just before entering the regex."""
    import re

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) if args.get("child") else None
    if "marker" in args:
        Path(args["marker"]).write_text(str(child.pid if child else 0))
    re.match(r"(a|a)*Q", "a" * int(args.get("n", 40)))
    return {}


@command("ops_busy")
def busy(args: dict[str, Any]) -> dict[str, Any]:
    """A pure-Python CPU-bound loop for ``seconds`` (default: an hour)."""
    end = time.monotonic() + float(args.get("seconds", 3600))
    n = 0
    while time.monotonic() < end:
        n += 1
    return {"n": n}


# -- test-side helpers (used by tests/test_ops_*.py, not by the bridge) ------------------

def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited process whose
    parent has not reaped it yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] != b"Z"


def wait_until(predicate, timeout: float, interval: float = 0.02) -> float | None:
    """Poll ``predicate`` until true; seconds it took, or None on timeout."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(interval)
