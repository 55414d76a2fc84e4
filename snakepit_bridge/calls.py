"""The records a transport and the dispatcher exchange: a :class:`Request` in,
a :class:`Result` out, and the worker's running :class:`Stats`.

Import them from :mod:`snakepit_bridge.dispatch`, which re-exports them. The
rest (:class:`CallRecord`, :class:`Encoded`, :func:`encoded`) is dispatch's own.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Request", "Result", "Stats"]


@dataclass(slots=True)
class Request:
    """One call as a transport hands it to dispatch."""

    command: str
    args: dict[str, Any]
    request_id: str = ""
    timeout_ms: int = 0
    session_id: str = ""
    #: A deadline the transport already knows (``time.monotonic()``), e.g. gRPC's.
    deadline: float | None = None
    #: Passed in by the transport: builds ``args`` from wire bytes (so that bad
    #: input fails inside dispatch, like every other error); called with the
    #: handler's wire hints (``Params.wire_hints()``) when it declares parameters ...
    decode: Callable[..., dict[str, Any]] | None = None
    #: Wire bytes ``decode`` reads: above ``OFFLOAD_BYTES`` it runs in a thread.
    decode_size: int = 0
    #: ... and turns a result or chunk map into the transport's payload.
    encode: Callable[[dict[str, Any]], Any] | None = None
    #: Set by dispatch for a handler that declares its parameters: what it is
    #: called with (its record, or its keyword arguments), bound from ``args``.
    bound: Any = None

    @property
    def handler_args(self) -> Any:
        """What the handler is called with: ``bound`` once set, else ``args``."""
        return self.args if self.bound is None else self.bound


@dataclass(slots=True)
class Result:
    """A unary call's outcome as dispatch hands it back."""

    success: bool
    result: dict[str, Any]
    error: str = ""
    code: str = "OK"
    #: ``request.encode(result)`` when the request has an encoder.
    payload: Any = None


@dataclass(slots=True)
class Stats:
    """The worker's running counters (Health, info)."""

    requests: int = 0
    errors: int = 0
    active_streams: int = 0
    started_monotonic: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)

    @property
    def uptime_ms(self) -> int:
        return int((time.monotonic() - self.started_monotonic) * 1000)


@dataclass(slots=True)
class CallRecord:
    """Bookkeeping for one call: what the per-call log line reports."""

    request: Request
    started: float = field(default_factory=time.perf_counter)
    outcome: str = "ok"
    chunks: int = 0
    error: str = ""


@dataclass(slots=True)
class Encoded:
    """A unary result already made a chunk map and encoded in the worker thread."""

    data: dict[str, Any]
    payload: Any


def encoded(result: Result, req: Request) -> Result:
    """Set ``result.payload`` when the request has an encoder."""
    if req.encode is not None:
        result.payload = req.encode(result.result)
    return result
