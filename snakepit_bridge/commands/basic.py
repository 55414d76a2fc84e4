"""ping, echo, compute, info: the commands every Snakepit 0.3 pool expects."""
from __future__ import annotations

import operator
import os
import platform
import time
from typing import Any

from .. import __version__
from ..context import Context
from ..errors import InvalidArgument
from ..registry import Registry

registry = Registry()

_OPERATIONS = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,
    "power": operator.pow,
}


@registry.command("ping")
def ping(args: dict[str, Any]) -> dict[str, Any]:
    """Liveness check; answers pong with the worker's time."""
    result = {"status": "ok", "message": "pong", "timestamp": time.time()}
    if "worker_id" in args:
        result["worker_id"] = args["worker_id"]
    return result


@registry.command("echo")
def echo(args: dict[str, Any]) -> dict[str, Any]:
    """Returns its arguments under ``echoed``."""
    return {"echoed": args, "timestamp": time.time()}


def _number(args: dict[str, Any], key: str) -> float | int:
    if key not in args:
        raise InvalidArgument(f"compute needs argument {key!r}")
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"compute argument {key!r} must be a number, got {type(value).__name__}")
    return value


@registry.command("compute")
def compute(args: dict[str, Any]) -> dict[str, Any]:
    """Arithmetic on ``a`` and ``b``: add, subtract, multiply, divide, power."""
    name = args.get("operation")
    func = _OPERATIONS.get(name)  # type: ignore[arg-type]
    if func is None:
        raise InvalidArgument(f"unknown operation {name!r}; expected one of {', '.join(_OPERATIONS)}")
    a, b = _number(args, "a"), _number(args, "b")
    if name == "divide" and b == 0:
        raise InvalidArgument("division by zero")
    try:
        result = func(a, b)
    except (OverflowError, ZeroDivisionError) as exc:
        raise InvalidArgument(f"{name} failed: {exc}") from None
    if isinstance(result, complex):
        raise InvalidArgument(f"{name} of {a} and {b} has no real result")
    return {"operation": name, "a": a, "b": b, "result": result}


@registry.command("info")
def info(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Facts about this worker: version, commands, uptime, counters."""
    d = ctx.dispatcher
    result: dict[str, Any] = {
        "worker_type": "python-snakepit-bridge",
        "version": __version__,
        "python_version": platform.python_version(),
        "pid": os.getpid(),
    }
    if d is not None:
        result.update(
            supported_commands=d.registry.names(),
            streaming_commands=sorted(h.name for h in d.registry if h.streaming),
            uptime_ms=d.stats.uptime_ms,
            total_requests=d.stats.requests,
            total_errors=d.stats.errors,
            active_sessions=len(d.sessions),
            active_streams=d.stats.active_streams,
        )
    return result
