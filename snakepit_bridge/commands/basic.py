"""ping, echo, compute, info: the commands every Snakepit 0.3 pool expects;
describe: what every command takes; echo_payload: values back one by one
(tests and benchmarks). The former ``make_payload`` (values of any requested
size) lives in the tests: a production worker builds nothing a caller sizes
beyond its own request.

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


@registry.command("compute", inline=True, extra="ignore")
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
    elif name == "multiply" and isinstance(a, int) and isinstance(b, int):
        # Each factor fits the decoder's digit limit, the product may not (and could not be encoded).
        if (abs(a).bit_length() + abs(b).bit_length()) * 0.30103 > _MAX_INT_DIGITS:
            raise InvalidArgument(f"multiply result too large: more than {_MAX_INT_DIGITS} digits")
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


@registry.command("describe", extra="ignore")
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
