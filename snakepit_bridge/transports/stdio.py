"""Snakepit's stdin/stdout protocol (GenericPythonV2 / GenericPythonMsgpack) over dispatch.

Started as ``grpc_bridge.py --mode pool-worker [--protocol json|msgpack] [--quiet]``
(CONTRACT.md §4). Frames are 4-byte big-endian lengths plus payload both ways
(see :mod:`._framing`; payload codecs in :mod:`snakepit_bridge.codecs.frames`); stdout carries nothing else.

Negotiation. Without ``--protocol`` the first frame is JSON
``{"type": "protocol_negotiation", "supported": [...], "preferred": ...}``;
the answer is JSON ``{"type": "protocol_selected", "protocol": P, "timestamp": T}``
where P is ``preferred`` if both sides support it, else the first entry of
``supported`` that this side supports (json, msgpack). With no common protocol
the answer is ``{"type": "protocol_error", "error": ..., "supported": [...]}``
and the worker exits with ExitCode.PROTOCOL. A negotiation frame is also
answered when ``--protocol`` is given (with that protocol, if offered). If the
first frame is a request instead, ``--protocol`` (or else the frame's own
look: JSON if it parses as a JSON object, MessagePack otherwise) decides.

Requests: ``{"id": int, "command": str, "args": map, "timestamp": iso8601}``.
Responses: ``{"id", "success": true, "result": map, "timestamp"}`` or
``{"id", "success": false, "error": str, "timestamp"}``; ``id`` is echoed as
sent. ``result`` is what dispatch makes of the handler's return value (a map;
a non-map value comes as ``{"value": v}``); a streaming command called this
way answers ``{"chunks": [...], "chunk_count": n}``. Timestamps are UTC ISO
8601 with microseconds and a ``Z`` (``2026-01-02T03:04:05.123456Z``), the form
Elixir's ``DateTime.to_iso8601(DateTime.utc_now())`` sends.

Serving. A request that can be answered without waiting (an inline handler
outside a session, :meth:`Dispatcher.call_now`, with room in the pipe) is
answered in the very loop callback that read its frame: no task, no extra
turn of the loop. Any other frame is served by a task, and the frames after
it wait for that task, so the order is the same either way. Before the loop
serves anything, a worker that owns its process answers such requests with
blocking reads and no loop at all (:mod:`._serial`), until the first frame
that needs more; from that frame on, everything is as described here.

Optional request fields (extensions; a Snakepit 0.3 pool sends none of them):

* ``"stream": true``: the answer is chunk frames ``{"id", "chunk": map,
  "chunk_index": n, "is_final": bool, "error": str | null, "timestamp"}``,
  indices from 0, exactly one ``is_final`` and it is the last; a failure ends
  the stream with a final chunk carrying ``error``.
* ``"pipeline": true``: the request runs concurrently with other pipelined
  requests and is answered when it finishes, so answers may come out of
  order (match them by ``id``). At most MAX_IN_FLIGHT run at once; beyond that
  stdin is not read until one finishes. A request without the flag waits for
  everything in flight and runs alone, so without the flag requests are
  served strictly in order, one at a time, as Snakepit 0.3 expects.
* ``"timeout_ms": int`` and ``"session_id": str``: as in gRPC
  (``args["session_id"]`` works too).

Bad input. A frame that does not decode, or is not a valid request, is
answered with ``success: false`` when its ``id`` can be recovered (a
best-effort scan of the broken frame) and only logged otherwise; the worker
keeps serving. A declared length above ``--max-message-mb`` is logged and
the worker exits with ExitCode.PROTOCOL (the stream cannot be resynchronized).
A result that cannot be encoded, or is over the limit, is an error response.

Ending. EOF on stdin (also inside a frame, which is dropped): stop reading;
the pool is gone, so requests already received get PARENT_GONE_GRACE seconds
(or ``--grace-period`` if shorter), then streams end with a final "worker is
shutting down" chunk and the rest are cancelled and answered with that error;
sessions are closed (their hooks run); exit 0. The parent process dying is
handled the same way (frames not yet started are dropped).
SIGTERM/SIGINT: the full ``--grace-period``, frames not yet started are
dropped and open streams end at once (as in gRPC mode). A second signal exits
at once with ExitCode.FORCED. Once stopping begins a watchdog thread ends the
process ``SHUTDOWN_MARGIN`` seconds after the grace whatever still runs.

As in gRPC mode (:mod:`snakepit_bridge.server`), signals use plain signal
handlers and the parent watcher is a thread (Linux's parent-death signal plus
a poll of the parent pid; ``--no-parent-watch`` turns it off), so a handler
that blocks the event loop can neither make the worker unkillable by SIGTERM
nor leave it an orphan. EOF itself is seen on the event loop (stdin is the
frame channel), so while the loop is blocked it is the parent watcher that
notices the pool is gone.

Nothing but frames reaches stdout: :func:`claim_stdio` keeps private
descriptors for the protocol and points fd 1 at stderr (and fd 0 at
/dev/null), so ``print()``, warnings, C extensions and child processes
cannot corrupt the stream or steal a frame.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .._clock import iso_utc
from .._lazy import lazy_module
from .._lifecycle import PARENT_GONE_GRACE, SHUTDOWN_MARGIN, shutdown_switch_interval, spawn_reaper
from .._lifecycle import say as _say
from .._lifecycle import watch_parent as _watch_parent
from .._proc import flush_and_exit, kill_descendants, take_stdout, terminate_descendants
from ..codecs.frames import CODECS, Codec, Encoded, PayloadError
from ..codecs.values import loads_json
from ..config import Config
from ..dispatch import OFFLOAD_BYTES, Dispatcher, Request, Result
from ..errors import BridgeError, ResourceExhausted
from ..exitcodes import ExitCode
from ..logging import get_logger
from ..registry import Registry
from ..sessions import session_name
from ._framing import FrameReader, FrameTooLarge, FrameWriter, TruncatedFrame

if TYPE_CHECKING:
    import asyncio
else:
    asyncio = lazy_module("asyncio")  # imported on first use: the stdio front end needs no loop (see _lazy.py)

__all__ = ["BadRequest", "MAX_IN_FLIGHT", "StdioServer", "WireRequest", "choose_protocol", "claim_stdio",
           "parse_request", "run"]

#: Pipelined requests that may run at once; beyond it stdin is not read.
MAX_IN_FLIGHT = 64
#: Our protocols, in our order of preference.
SUPPORTED = ("msgpack", "json")
#: Stop reasons that mean the pool is gone (the short grace applies).
POOL_GONE = ("stdin closed", "stdin failed", "stdout closed", "parent died")
#: After the grace period: how long cancelled work gets (within the margin,
#: which cleanup needs too).
CANCEL_WAIT = 0.1
#: Watchdog budget for cleanup when serving ended without a stop request
#: (a bug in the frame loop).
CLEANUP_BUDGET = 1.5
#: Room for the response envelope around an encoded result, within the frame limit.
ENVELOPE_ROOM = 1024

_claimed: tuple[int, int] | None = None


def now_iso(ns: int | None = None) -> str:
    """UTC ISO 8601 with microseconds and ``Z`` (now, or ``ns`` since the epoch)."""
    return iso_utc(None if ns is None else ns / 1e9)


def claim_stdio() -> tuple[int, int]:
    """Take private descriptors for frames: ``(read_fd, write_fd)``.

    Then fd 0 reads /dev/null (a handler calling ``input()`` cannot steal a
    frame), fd 1 and ``sys.stdout`` write to stderr (stray ``print()`` and
    C-level writes cannot corrupt the stream). Idempotent: a second call
    returns the same pair, so a caller may claim early (before importing user
    code that prints at import time).
    """
    global _claimed
    if _claimed is not None:
        return _claimed
    read_fd = os.dup(0)  # non-inheritable: child processes do not get it
    write_fd = take_stdout()
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    _claimed = (read_fd, write_fd)
    return _claimed


def choose_protocol(supported: Any, preferred: Any, fixed: str | None = None) -> str | None:
    """The protocol to answer a negotiation with, or None if there is no common one."""
    offered = [p for p in supported if isinstance(p, str)] if isinstance(supported, list) else ["json"]
    if fixed is not None:
        return fixed if fixed in offered else None
    if preferred in offered and preferred in SUPPORTED:
        return preferred
    return next((p for p in offered if p in SUPPORTED), None)


@dataclass(slots=True)
class WireRequest:
    """A request frame's fields, checked (:func:`parse_request`)."""

    id: int | str
    command: str
    args: dict[str, Any]
    stream: bool = False
    pipeline: bool = False
    timeout_ms: int = 0
    session_id: str = ""


class BadRequest(Exception):
    def __init__(self, message: str, request_id: int | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


def _flag(obj: dict[str, Any], key: str, rid: int | str) -> bool:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise BadRequest(f"request field {key!r} must be true or false, got {type(value).__name__}", rid)


def parse_request(obj: Any) -> WireRequest:
    """A decoded frame -> :class:`WireRequest`; raises :class:`BadRequest`
    (with the id when there is a usable one)."""
    if not isinstance(obj, dict):
        raise BadRequest(f"a request must be a map, got {type(obj).__name__}")
    rid = obj.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        if obj.get("type") == "protocol_negotiation":
            raise BadRequest("protocol negotiation after the protocol was settled; ignored")
        raise BadRequest("request has no usable 'id' (an integer)")
    command = obj.get("command")
    if not isinstance(command, str) or not command:
        raise BadRequest("request field 'command' must be a non-empty string", rid)
    args = obj.get("args")
    if args is None:
        args = {}
    elif not isinstance(args, dict):
        raise BadRequest(f"request field 'args' must be a map, got {type(args).__name__}", rid)
    if len(obj) == 2 + ("args" in obj) + ("timestamp" in obj):  # nothing else: the optional fields' defaults
        return WireRequest(rid, command, args)
    timeout_ms = obj.get("timeout_ms") or 0
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 0:
        raise BadRequest("request field 'timeout_ms' must be a non-negative integer", rid)
    # Present but not a string (0, false, null, 1.5): the session its JSON text
    # spells, as for args["session_id"]; never the worker-global store.
    session_id = obj.get("session_id", "")
    if not isinstance(session_id, str):
        try:
            session_id = session_name(session_id)
        except BridgeError as exc:
            raise BadRequest(f"request field {exc.message}", rid) from None
    return WireRequest(rid, command, args, _flag(obj, "stream", rid), _flag(obj, "pipeline", rid),
                       timeout_ms, session_id)


class StdioServer:
    """Serves frames from ``reader`` through ``dispatcher`` to ``writer``."""

    def __init__(self, dispatcher: Dispatcher, reader: FrameReader, writer: FrameWriter, *,
                 protocol: str | None = None, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.dispatcher = dispatcher
        self.config: Config = dispatcher.config
        self.reader = reader
        self.writer = writer
        self.fixed = protocol
        self.codec: Codec | None = CODECS[protocol]() if protocol else None
        self.settled = False  # the first frame has been seen (negotiation is over)
        self.limit = self.config.max_message_bytes
        self.log = get_logger("snakepit_bridge.stdio")
        self.exit_code = ExitCode.OK
        self.stop_reason = ""
        self.grace = self.config.grace_period  # set by the stop reason
        #: Called with (reason, grace) when stopping begins (on the loop): arms the watchdog.
        self.on_stopping: Callable[[str, float], None] | None = None
        self._stop = asyncio.Event()
        self._done = asyncio.Event()  # set once stopping and nothing is left to serve
        self._signalled = False
        self._halted = False  # no further frame is taken
        self._slots = asyncio.Semaphore(max_in_flight)
        self._step: asyncio.Task[None] | None = None  # the frame being served by a task, if any
        self._tasks: set[asyncio.Task[None]] = set()  # pipelined requests in flight
        # The reader reads ahead, so EOF is seen while a request still runs.
        reader.on_eof = lambda: self._begin_stop("stdin closed")

    # -- lifecycle ------------------------------------------------------------------

    async def serve(self) -> ExitCode:
        """Serve until EOF, a signal or a fatal framing error; returns the exit code."""
        self.reader.on_ready = self._pump
        self._pump()  # frames may be buffered already
        await self._stop.wait()
        if not self._idle():
            try:
                await asyncio.wait_for(self._done.wait(), self.grace)
            except (TimeoutError, asyncio.TimeoutError):
                running = [t for t in (self._step, *self._tasks) if t is not None]
                self.log.warning("requests still running after the grace period; cancelling them",
                                 in_flight=len(running) or 1, grace_s=self.grace, reason=self.stop_reason)
                self._halted = True
                self.dispatcher.interrupt_streams()
                for task in running:
                    task.cancel()
                if running:
                    await asyncio.wait(running, timeout=CANCEL_WAIT)
        return self.exit_code

    def halt(self, reason: str, code: ExitCode | None = None) -> None:
        """Take no further frame: the request being served and pipelined ones
        in flight finish (within the grace period); frames not yet started are
        dropped. ``code`` overrides the exit code."""
        if code is not None:
            self.exit_code = code
        self._halted = True
        self._begin_stop(reason)
        self.reader.close()
        self._check_idle()

    def on_signal(self, name: str) -> None:
        if self._signalled:
            self.log.warning("second signal during shutdown; exiting now", signal=name)
            kill_descendants()
            flush_and_exit(ExitCode.FORCED)
        self._signalled = True
        self.halt(f"signal {name}")
        # As in gRPC mode: open streams end now (with a final "worker is
        # shutting down" chunk); unary calls get the grace period.
        self.dispatcher.interrupt_streams()

    def _begin_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self.grace = grace_for(reason, self.config.grace_period)
            self.log.info("stopping", reason=reason, grace_s=self.grace)
            if self.on_stopping is not None:
                self.on_stopping(reason, self.grace)
            self._stop.set()

    def _idle(self) -> bool:
        """Nothing left to do: no more frames will be served and none is running."""
        return (self._halted or self.reader.ended) and self._step is None and not self._tasks

    def _check_idle(self) -> None:
        if self._idle():
            self._done.set()

    # -- reading --------------------------------------------------------------------

    def _pump(self) -> None:
        """Serve the frames read so far, in order (the reader calls this when
        bytes arrive). A request that can be answered on the spot is answered
        here, in the callback that read it: no task, no loop turn. Any other
        frame is served by a task, ``_step``, and the pump goes on when it ends,
        so requests are still served one at a time, in order."""
        try:
            while self._step is None and not self._halted:
                payload = self.reader.take()
                if payload is None:
                    if self.reader.ended:
                        self._begin_stop("stdin closed")
                        self._check_idle()
                    return
                req = self._parse_now(payload)
                if req is not None and self._answer_now(req):
                    continue
                self._step = asyncio.create_task(self._handle(payload, req))
                self._step.add_done_callback(self._step_done)
        except TruncatedFrame as exc:
            self.log.warning("stdin closed inside a frame; the partial frame is dropped", detail=str(exc))
            self._end_reading("stdin closed")
        except FrameTooLarge as exc:
            self.log.error(
                "frame larger than the message limit; the stream cannot be resynchronized, exiting",
                declared_bytes=exc.declared, limit_bytes=exc.limit, hint="raise --max-message-mb",
            )
            self.exit_code = ExitCode.PROTOCOL
            self._end_reading("frame too large")
        except OSError as exc:
            self.log.error("reading stdin failed", error=str(exc))
            self._end_reading("stdin failed")
        except Exception as exc:  # noqa: BLE001 - a bug here must stop the worker, not hang it
            self.log.error("stdio loop failed", error=f"{type(exc).__name__}: {exc}")
            self.exit_code = ExitCode.ERROR
            self._end_reading("stdio loop failed")

    def _end_reading(self, reason: str) -> None:
        self._halted = True
        self.reader.close()
        self._begin_stop(reason)
        self._check_idle()

    def _step_done(self, task: asyncio.Task[None]) -> None:
        self._step = None
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("request task failed", error=f"{type(exc).__name__}: {exc}")
        self._pump()
        self._check_idle()

    def _parse_now(self, payload: bytes | bytearray) -> WireRequest | None:
        """The request in a frame, for the on-the-spot path; None for anything
        else (negotiation, bad input), which :meth:`_handle` then takes from the start."""
        if not self.settled or len(payload) > OFFLOAD_BYTES:  # a large frame is decoded off the loop
            return None
        assert self.codec is not None  # settled: _negotiate chose it
        try:
            return parse_request(self.codec.decode(payload))
        except Exception:  # noqa: BLE001 - _handle decodes it again and answers the error
            return None

    def _answer_now(self, w: WireRequest) -> bool:
        """Answer ``w`` here and now if nothing has to wait: an inline handler
        outside a session (:meth:`Dispatcher.call_now`), a serial request with
        nothing pipelined in flight, and room in the pipe. False: not served."""
        if w.stream or w.pipeline or self._tasks or not self.writer.ready:
            return False
        result = self.dispatcher.call_now(self._request(w))
        if result is None:
            return False
        if not self.writer.write_nowait(self._answer(w, result)):
            self.log.warning("stdout is closed; stopping")
            self.halt("stdout closed")
        return True

    async def _handle(self, payload: bytes | bytearray, req: WireRequest | None = None) -> None:
        if req is None:
            if not self.settled:
                self.settled = True
                if await self._negotiate(payload):
                    return
            req = await self._parse(payload)
            if req is None:
                return
        if req.pipeline:
            await self._slots.acquire()  # at the cap, no further frame is taken until a slot frees
            task = asyncio.create_task(self._serve(req))
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        else:
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            await self._serve(req)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("request task failed", error=f"{type(exc).__name__}: {exc}")
        self._check_idle()

    async def _negotiate(self, payload: bytes | bytearray) -> bool:
        """Settle the codec from the first frame; True if it was a negotiation."""
        msg = None
        if payload[:1] == b"{":
            with contextlib.suppress(ValueError):
                msg = loads_json(payload)  # the one JSON decoder: a first request may hold a huge int
        if isinstance(msg, dict) and msg.get("type") == "protocol_negotiation":
            selected = choose_protocol(msg.get("supported"), msg.get("preferred"), self.fixed)
            if selected is None:
                ours = [self.fixed] if self.fixed else list(SUPPORTED)
                error = f"no common protocol: offered {msg.get('supported')!r}, this worker speaks {ours}"
                self.log.error("protocol negotiation failed", error=error)
                await self._write(orjson.dumps({"type": "protocol_error", "error": error, "supported": ours,
                                                "timestamp": now_iso()}))
                self.halt("no common protocol", ExitCode.PROTOCOL)
                return True
            self.codec = CODECS[selected]()
            await self._write(orjson.dumps({"type": "protocol_selected", "protocol": selected, "timestamp": now_iso()}))
            self.log.info("protocol negotiated", protocol=selected, offered=msg.get("supported"))
            return True
        if self.codec is None:
            guess = "json" if isinstance(msg, dict) else "msgpack"
            self.log.warning("first frame is not a protocol negotiation; guessing the protocol", protocol=guess)
            self.codec = CODECS[guess]()
        return False

    async def _parse(self, payload: bytes | bytearray) -> WireRequest | None:
        assert self.codec is not None  # _negotiate settled it
        try:
            if len(payload) > OFFLOAD_BYTES:  # tens of MB take hundreds of ms to decode: not on the loop
                obj = await asyncio.get_running_loop().run_in_executor(self.dispatcher.executor, self.codec.decode,
                                                                       payload)
                return parse_request(obj)
            return parse_request(self.codec.decode(payload))
        except PayloadError as exc:
            rid = self.codec.recover_id(payload)
            await self._reject(rid, f"bad frame ({len(payload)} bytes): {exc}")
        except BadRequest as exc:
            await self._reject(exc.request_id, f"bad request: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - e.g. RecursionError on absurd nesting: still bad input
            await self._reject(self.codec.recover_id(payload), f"bad frame: {type(exc).__name__}: {exc}")
        return None

    async def _reject(self, rid: int | str | None, error: str) -> None:
        if rid is None:
            self.log.warning("frame ignored: no request id to answer", error=error)
            return
        self.log.warning("bad request answered with an error", request_id=rid, error=error)
        with contextlib.suppress(BrokenPipeError):
            await self._write(self._error_frame(rid, error))

    # -- serving --------------------------------------------------------------------

    def _request(self, w: WireRequest) -> Request:
        return Request(command=w.command, args=w.args, request_id=str(w.id), timeout_ms=w.timeout_ms,
                       session_id=w.session_id, encode=self._encode)

    def _encode(self, values: dict[str, Any]) -> bytes:
        """Dispatch's encoder: a failure here becomes the request's error."""
        codec = self.codec
        assert codec is not None  # requests are served only once the codec is settled
        try:
            data = codec.encode_value(values)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BridgeError(f"result cannot be sent as {codec.name}: {exc}") from None
        if len(data) > self.limit - ENVELOPE_ROOM:
            raise ResourceExhausted(
                f"result is {len(data)} bytes as {codec.name}; the message limit is {self.limit} bytes (--max-message-mb)"
            )
        return data

    async def _serve(self, w: WireRequest) -> None:
        try:
            if w.stream:
                await self._serve_stream(w)
            else:
                await self._serve_call(w)
        except BrokenPipeError:
            if not self._stop.is_set():
                self.log.warning("stdout is closed; stopping")
            self.halt("stdout closed")
        except Exception as exc:  # noqa: BLE001 - a transport bug must not end the loop
            self.log.error("request failed in the stdio transport", request_id=w.id, command=w.command,
                           error=f"{type(exc).__name__}: {exc}")

    async def _serve_call(self, w: WireRequest) -> None:
        req = self._request(w)
        try:
            try:
                result = await self.dispatcher.call(req)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. the error details themselves did not encode
                _, message, _ = self.dispatcher.failure(exc, req)
                payload = self._error_frame(w.id, message)
            else:
                payload = self._answer(w, result)
            # The write only waits before putting the frame, so a cancellation
            # there means nothing was written and the handler below answers.
            await self._write(payload)
        except asyncio.CancelledError:
            self.writer.write_nowait(self._error_frame(w.id, "worker is shutting down"))
            raise

    async def _serve_stream(self, w: WireRequest) -> None:
        req = self._request(w)
        index, final = 0, False  # of what has been written
        try:
            async with contextlib.aclosing(self.dispatcher.stream(req)) as chunks:
                async for chunk in chunks:
                    await self._write(self._chunk_frame(w.id, Encoded(chunk.payload), chunk.index, chunk.is_final,
                                                        chunk.error or None, chunk.timestamp_ns))
                    index, final = chunk.index + 1, chunk.is_final
        except asyncio.CancelledError:
            if not final:
                self.writer.write_nowait(self._chunk_frame(w.id, {}, index, True, "worker is shutting down"))
            raise
        except BrokenPipeError:
            raise
        except Exception as exc:  # noqa: BLE001 - a chunk that did not encode after a failure
            if not final:
                _, message, _ = self.dispatcher.failure(exc, req)
                await self._write(self._chunk_frame(w.id, {}, index, True, message))

    # -- frames ---------------------------------------------------------------------

    def _answer(self, w: WireRequest, result: Result) -> bytes:
        if result.success:
            assert self.codec is not None  # answers are sent only once the codec is settled
            try:
                return self.codec.answer(w.id, result.payload, iso_utc())
            except Exception:  # noqa: BLE001 - an id the codec's fast builder refuses: the general one answers
                return self._frame([("id", w.id), ("success", True), ("result", Encoded(result.payload)),
                                    ("timestamp", iso_utc())], w.id)
        return self._error_frame(w.id, result.error)

    async def _write(self, payload: bytes) -> None:
        await self.writer.write(payload)

    def _frame(self, fields: list[tuple[str, Any]], rid: int | str) -> bytes:
        assert self.codec is not None  # answers are sent only once the codec is settled
        try:
            return self.codec.envelope(fields)
        except Exception as exc:  # noqa: BLE001 - e.g. an error text with lone surrogates
            self.log.error("response could not be encoded", request_id=rid, error=f"{type(exc).__name__}: {exc}")
            error = f"response could not be encoded: {type(exc).__name__}"
            kept = [(k, v) for k, v in fields if k in ("id", "chunk_index")]
            if any(k == "chunk_index" for k, _ in fields):
                return self.codec.envelope([kept[0], ("chunk", {}), kept[1], ("is_final", True), ("error", error),
                                            ("timestamp", now_iso())])
            return self.codec.envelope([kept[0], ("success", False), ("error", error), ("timestamp", now_iso())])

    def _error_frame(self, rid: int | str, error: str) -> bytes:
        return self._frame([("id", rid), ("success", False), ("error", error), ("timestamp", now_iso())], rid)

    def _chunk_frame(self, rid: int | str, chunk: Any, index: int, is_final: bool, error: str | None,
                     timestamp_ns: int | None = None) -> bytes:
        return self._frame([("id", rid), ("chunk", chunk), ("chunk_index", index), ("is_final", is_final),
                            ("error", error), ("timestamp", now_iso(timestamp_ns))], rid)


def grace_for(reason: str, grace_period: float) -> float:
    """The grace for requests in flight: the full ``grace_period`` unless the
    pool is gone (see POOL_GONE), as in gRPC mode's ``request_stop``."""
    return min(grace_period, PARENT_GONE_GRACE) if reason.startswith(POOL_GONE) else grace_period


def run(config: Config, registry: Registry, *, read_fd: int | None = None,
        write_fd: int | None = None, parent_pid: int | None = None) -> Coroutine[Any, Any, ExitCode]:
    """Serve the stdio protocol until EOF, a signal or a fatal framing error:
    returns the coroutine to run on an event loop, which returns the exit code.

    Without ``read_fd``/``write_fd`` the process's own stdin/stdout are
    claimed (:func:`claim_stdio`): the worker owns the process, so the parent
    (``parent_pid``, default the current one) is watched, and once stopping
    begins a watchdog exits the process with the exit code if shutdown overruns
    its budget (a handler hogging the loop, a close hook that never returns).
    Such a worker first serves from the serial front end (:mod:`._serial`)
    in this call, blocking, before any event loop exists (asyncio is not even
    imported until then); the coroutine takes over from where it stopped.
    """
    owns_process = read_fd is None or write_fd is None
    if owns_process:
        read_fd, write_fd = claim_stdio()
    assert read_fd is not None and write_fd is not None  # given, or claimed just above
    log = get_logger("snakepit_bridge.stdio")
    parent = os.getppid() if parent_pid is None else parent_pid
    dispatcher = Dispatcher(registry, config)
    # -- serial front end (see _serial.py): a worker that owns its process
    # answers serial inline requests with blocking reads, no loop, until a
    # frame needs the loop; signals and the parent watcher stop it meanwhile.
    from ._serial import SerialFront

    front = SerialFront(dispatcher, read_fd, write_fd, protocol=config.protocol) if owns_process else None
    loop: asyncio.AbstractEventLoop | None = None  # once the front end has handed over
    server: StdioServer | None = None
    watchdog = _Watchdog(front, log) if front is not None else None
    # -- end of the serial front end's setup
    signals = (signal.SIGTERM, signal.SIGINT)
    signalled = itertools.count()  # next() is atomic: exactly one first signal

    def on_signal(signum: int, _frame: Any) -> None:
        """A plain signal handler, not loop.add_signal_handler: Python runs it
        in the main thread between bytecodes, also while a handler hogs the
        loop; so the watchdog is armed and a second signal exits here."""
        name = signal.Signals(signum).name
        if next(signalled):
            _say(log, "second signal during shutdown; exiting now", signal=name)
            kill_descendants()
            flush_and_exit(ExitCode.FORCED)
        if watchdog is not None:
            watchdog.arm(config.grace_period + SHUTDOWN_MARGIN, f"signal {name}")
        if front is not None and front.serving:
            front.stop("on_signal", name)  # serial front end: may interrupt its blocking read
            return
        _loop().call_soon_threadsafe(_server().on_signal, name)

    def parent_gone(why: str) -> None:
        """From the parent watcher (a thread or a signal handler)."""
        # Said here, not only on the loop: a handler may be hogging it.
        _say(log, "parent process died; stopping", reason=why)
        if watchdog is not None:
            watchdog.arm(grace_for(why, config.grace_period) + SHUTDOWN_MARGIN, why)
        if front is not None and front.serving:
            front.stop("halt", why)  # serial front end
            return
        _loop().call_soon_threadsafe(_server().halt, why)

    def _loop() -> asyncio.AbstractEventLoop:
        assert loop is not None  # the front end serves until the loop exists
        return loop

    def _server() -> StdioServer:
        assert server is not None  # the front end serves until it exists
        return server

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():  # signal.signal works only there
        for sig in signals:
            previous[sig] = signal.signal(sig, on_signal)

    def watch() -> None:
        if owns_process and config.watch_parent:
            _watch_parent(parent, parent_gone, log)

    def ready() -> None:
        log.info("pool worker ready", pid=os.getpid(), protocol=config.protocol or "negotiate", commands=len(registry))

    handed = b""
    if front is not None:
        # Done once the front end has answered its first frame or has nothing
        # to read (so the pool's first answer does not wait for them; until
        # then no handler has run): start the reaper process (unless cli.main
        # did, for user code), arm the parent watcher (it checks the parent
        # at once), and say ready (at info the first line imports structlog).
        front.when_idle(spawn_reaper)
        front.when_idle(watch)
        front.when_idle(ready)
        handed = front.serve()  # blocks until it hands over
    else:
        watch()
        ready()

    async def serve_on_loop() -> ExitCode:
        nonlocal loop, server
        loop = asyncio.get_running_loop()
        reader = FrameReader(read_fd, config.max_message_bytes, handed)
        writer = await FrameWriter.open(write_fd)
        server = StdioServer(dispatcher, reader, writer, protocol=config.protocol)
        if watchdog is not None:
            server.on_stopping = lambda reason, grace: watchdog.arm(grace + SHUTDOWN_MARGIN, reason)
        if front is not None:
            front.hand_over(server)
        code = ExitCode.ERROR
        try:
            code = await server.serve()
        finally:
            if watchdog is not None:
                watchdog.arm(CLEANUP_BUDGET, "serving ended")  # no-op if stopping armed it already
            await dispatcher.aclose()
            reader.close()
            await writer.aclose(timeout=CLEANUP_BUDGET / 3)
            await asyncio.to_thread(terminate_descendants, 0.2)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stopped", reason=server.stop_reason, exit_code=int(code))
        return code

    return serve_on_loop()


class _Watchdog:
    """Ends the process (with the server's exit code) a given time after it is
    first armed, if it has not ended by itself: interpreter exit joins handler
    threads, which may never return, and a handler may hog the event loop.
    Armed from the loop, signal handlers and threads; the first arming wins."""

    def __init__(self, server: Any, log: Any) -> None:  # a StdioServer, or the SerialFront before it
        self._server = server
        self._log = log
        self._armed = itertools.count()  # next() is atomic

    def arm(self, seconds: float, reason: str) -> None:
        if next(self._armed):
            return
        shutdown_switch_interval()  # busy handler threads must not starve the shutdown

        def watch() -> None:
            time.sleep(seconds)
            kill_descendants()  # first: it also tells the reaper this exit is under way
            _say(self._log, "shutdown overran its budget; exiting now", reason=reason, budget_s=round(seconds, 3))
            flush_and_exit(self._server.exit_code)

        threading.Thread(target=watch, name="snakepit-stdio-watchdog", daemon=True).start()
