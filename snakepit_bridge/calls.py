"""The records a transport and the dispatcher exchange: a :class:`Request` in,
a :class:`Result` out, and the worker's running :class:`Stats`.

Import them from :mod:`snakepit_bridge.dispatch`, which re-exports them. The
rest (:class:`CallRecord`, :class:`Encoded`, :func:`encoded`) is dispatch's own.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Request", "Result", "Stats"]


class _Record:
    """What ``@dataclass(slots=True)`` gave these classes (equality by fields,
    a repr listing them, unhashable), written out: the decorator's code
    generation cost ~1.3 ms of a stdio worker's start-up, before its first
    answer, for these few small classes."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        names: tuple[str, ...] = self.__slots__
        return all(getattr(self, name) == getattr(other, name) for name in names)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.__class__.__qualname__}({fields})"


class Request(_Record):
    """One call as a transport hands it to dispatch.

    * ``deadline``: a deadline the transport already knows (``time.monotonic()``), e.g. gRPC's.
    * ``decode``: passed in by the transport: builds ``args`` from wire bytes
      (so that bad input fails inside dispatch, like every other error);
      called with the handler's wire hints (``Params.wire_hints()``) when it
      declares parameters ...
    * ``decode_size``: wire bytes ``decode`` reads: above ``OFFLOAD_BYTES`` it runs in a thread.
    * ``encode``: ... and turns a result or chunk map into the transport's payload.
    * ``bound``: set by dispatch for a handler that declares its parameters:
      what it is called with (its record, or its keyword arguments), bound from ``args``.
    """

    __slots__ = ("command", "args", "request_id", "timeout_ms", "session_id", "deadline", "decode", "decode_size",
                 "encode", "bound")

    def __init__(self, command: str, args: dict[str, Any], request_id: str = "", timeout_ms: int = 0,
                 session_id: str = "", deadline: float | None = None,
                 decode: Callable[..., dict[str, Any]] | None = None, decode_size: int = 0,
                 encode: Callable[[dict[str, Any]], Any] | None = None, bound: Any = None) -> None:
        self.command = command
        self.args = args
        self.request_id = request_id
        self.timeout_ms = timeout_ms
        self.session_id = session_id
        self.deadline = deadline
        self.decode = decode
        self.decode_size = decode_size
        self.encode = encode
        self.bound = bound

    @property
    def handler_args(self) -> Any:
        """What the handler is called with: ``bound`` once set, else ``args``."""
        return self.args if self.bound is None else self.bound


class Result(_Record):
    """A unary call's outcome as dispatch hands it back; ``payload``:
    ``request.encode(result)`` when the request has an encoder."""

    __slots__ = ("success", "result", "error", "code", "payload")

    def __init__(self, success: bool, result: dict[str, Any], error: str = "", code: str = "OK",
                 payload: Any = None) -> None:
        self.success = success
        self.result = result
        self.error = error
        self.code = code
        self.payload = payload


class Stats(_Record):
    """The worker's running counters (Health, info)."""

    __slots__ = ("requests", "errors", "active_streams", "started_monotonic", "started_wall")

    def __init__(self, requests: int = 0, errors: int = 0, active_streams: int = 0,
                 started_monotonic: float | None = None, started_wall: float | None = None) -> None:
        self.requests = requests
        self.errors = errors
        self.active_streams = active_streams
        self.started_monotonic = time.monotonic() if started_monotonic is None else started_monotonic
        self.started_wall = time.time() if started_wall is None else started_wall

    @property
    def uptime_ms(self) -> int:
        return int((time.monotonic() - self.started_monotonic) * 1000)


class CallRecord(_Record):
    """Bookkeeping for one call: what the per-call log line reports."""

    __slots__ = ("request", "started", "outcome", "chunks", "error")

    def __init__(self, request: Request, started: float | None = None, outcome: str = "ok", chunks: int = 0,
                 error: str = "") -> None:
        self.request = request
        self.started = time.perf_counter() if started is None else started
        self.outcome = outcome
        self.chunks = chunks
        self.error = error


class Encoded(_Record):
    """A unary result already made a chunk map and encoded in the worker thread."""

    __slots__ = ("data", "payload")

    def __init__(self, data: dict[str, Any], payload: Any) -> None:
        self.data = data
        self.payload = payload


def encoded(result: Result, req: Request) -> Result:
    """Set ``result.payload`` when the request has an encoder."""
    if req.encode is not None:
        result.payload = req.encode(result.result)
    return result
