"""ping, echo, compute, info: the commands every Snakepit 0.3 pool expects;
describe: what every command takes; echo_payload and make_payload: large
values for tests and benchmarks.

ping, echo, echo_payload and info are untyped on purpose: ping takes what a
pool's init ping sends and is the hottest call there is, echo and echo_payload
take anything, info nothing."""
from __future__ import annotations

import math
import operator
import os
import platform
import sys
import time
from typing import Annotated, Any, Literal

from .. import __version__
from ..context import Context
from ..errors import InvalidArgument, NotFound
from ..params import Param
from ..registry import Registry

registry = Registry()

_OPERATIONS = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,
    "power": operator.pow,
}


# ping, compute and info are inline: they never block, and running them on the
# loop skips the worker-thread hop and the task (most of a ping's cost). echo
# and the payload commands run in a thread so a large result is encoded off the loop.
@registry.command("ping", inline=True)
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


@registry.command("echo_payload")
def echo_payload(args: dict[str, Any]) -> dict[str, Any]:
    """Returns its arguments as the result map itself, so each value is
    encoded on its own (a 50 MB array comes back as npy). ``echo`` nests the
    arguments under ``echoed``, which makes them one structure (MessagePack,
    arrays as lists) once they pass the binary threshold."""
    return dict(args)


_PAYLOAD_KINDS = ("bytes", "str", "array", "list", "dict")


@registry.command("make_payload")
def make_payload(*, kind: Literal["bytes", "str", "array", "list", "dict"] = "bytes",
                 size: Annotated[int, Param("about this many bytes", ge=0, le=2**31)] = 1024) -> dict[str, Any]:
    """``{"value": v}`` where ``v`` is about ``size`` bytes of ``kind``:
    bytes, str (ASCII), array (float64 numpy), list (of floats), dict (of
    short strings). Deterministic content; for tests and benchmarks."""
    if kind not in _PAYLOAD_KINDS:
        raise InvalidArgument(f"unknown kind {kind!r}; expected one of {', '.join(_PAYLOAD_KINDS)}")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= 2**31:
        raise InvalidArgument(f"size must be an int in 0..2**31, got {size!r}")
    if kind == "bytes":
        value: Any = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    elif kind == "str":
        value = ("0123456789abcdef" * (size // 16 + 1))[:size]
    elif kind == "array":
        import numpy as np

        value = np.arange(size // 8, dtype=np.float64) * 0.5
    elif kind == "list":
        value = [i * 0.5 for i in range(size // 8)]
    else:
        value = {f"k{i}": "v" for i in range(size // 16)}
    return {"value": value, "kind": kind}


# The largest integer result compute returns, in decimal digits: Python's
# int->str limit, beyond which the result could not be encoded anyway.
# Refused before computing, so a huge power cannot block the event loop.
_MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300


def _check_power(a: float | int, b: float | int) -> None:
    """Refuse an integer power whose result would exceed _MAX_INT_DIGITS
    digits, estimated as b*log10(|a|) without computing it."""
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        digits = b * math.log10(abs(a)) + 1  # |a|**b has floor(b*log10|a|) + 1 digits
        if digits > _MAX_INT_DIGITS:
            raise InvalidArgument(f"power result too large: {a}**{b} has about {digits:.3g} digits "
                                  f"(limit {_MAX_INT_DIGITS})")


def _is_inf(x: float | int) -> bool:
    # Not math.isinf: it converts an int to float and overflows on a huge one.
    return isinstance(x, float) and math.isinf(x)


@registry.command("compute", inline=True)
def compute(*, operation: Literal["add", "subtract", "multiply", "divide", "power"], a: int | float,
            b: int | float) -> dict[str, Any]:
    """Arithmetic on ``a`` and ``b``: add, subtract, multiply, divide, power."""
    name = operation
    func = _OPERATIONS.get(name)
    if func is None:
        raise InvalidArgument(f"unknown operation {name!r}; expected one of {', '.join(_OPERATIONS)}")
    if name == "divide" and b == 0:
        raise InvalidArgument("division by zero")
    if name == "power":
        _check_power(a, b)
    try:
        result = func(a, b)
    except OverflowError:
        raise InvalidArgument(f"{name} of {a} and {b} is too large for a float") from None
    except ZeroDivisionError as exc:
        raise InvalidArgument(f"{name} failed: {exc}") from None
    # Float arithmetic overflows to inf silently (1e308 * 10); inf is not a
    # number the caller can use, so report it like pow's OverflowError.
    if isinstance(result, float) and math.isinf(result) and not any(_is_inf(x) for x in (a, b)):
        raise InvalidArgument(f"{name} of {a} and {b} is too large for a float")
    if isinstance(result, complex):
        raise InvalidArgument(f"{name} of {a} and {b} has no real result")
    return {"operation": name, "a": a, "b": b, "result": result}


@registry.command("info", inline=True)
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


@registry.command("describe")
def describe(ctx: Context, *,
             command: Annotated[str, Param("one command; every command when left out")] | None = None
             ) -> dict[str, Any]:
    """What each command takes (``params_schema``, JSON Schema), whether it
    streams, and its docstring's first paragraph: ``{"commands": [...]}``.

    A thread, not inline: the first describe builds every schema."""
    registry_ = ctx.dispatcher.registry if ctx.dispatcher is not None else registry
    if command is None:
        return {"commands": [h.describe() for h in sorted(registry_, key=lambda h: h.name)]}
    handler = registry_.find(command)
    if handler is None:
        raise NotFound(f"unknown command {command!r}")
    return {"commands": [handler.describe()]}
