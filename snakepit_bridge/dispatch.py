"""The transport-agnostic core: a request in, a result or a stream of chunks out.

Every transport (gRPC, stdio, pull-based generators) calls :meth:`Dispatcher.call`
or :meth:`Dispatcher.stream`; neither knows which transport asked. This module
is also the one place where exceptions become wire errors (:meth:`Dispatcher.failure`).

Semantics, whatever the handler kind:

* ``stream()`` yields chunks with ``index`` 0..n-1, exactly one of them final
  and last, also for a generator that yields nothing (an empty final chunk
  follows the last item) and for one that fails (a final chunk with ``error``).
  A unary handler streams as one final chunk holding its result.
* ``call()`` on a unary handler returns its result. On a streaming handler it
  collects the stream into ``{"chunks": [...], "chunk_count": n}`` (at most
  ``config.max_execute_chunks`` chunks and ``config.max_execute_bytes`` bytes
  of chunks, else RESOURCE_EXHAUSTED saying to stream), and
  fails if any chunk carried an error: Snakepit 0.3 pools call Execute for
  commands they do not know stream, and a list of every chunk is the one answer
  that loses nothing.
* ``timeout_ms`` (and a transport deadline, whichever is earlier) cuts a call
  off with DEADLINE_EXCEEDED: a unary call returns that code, a stream ends
  with a final chunk whose ``error`` says the deadline was exceeded (and
  ``code`` is ``DEADLINE_EXCEEDED``). The handler's context is cancelled and
  its generator closed. A stream arms one timer for this, not one per chunk.
* Generators are lazy and run behind a bounded buffer (:mod:`._pump`): the
  producer runs at most ``config.stream_buffer`` chunks ahead of the
  transport. What the transport itself buffers comes on top: over gRPC that
  is the client's HTTP/2 window plus socket buffers (measured on loopback:
  one or two 64 KiB chunks with a 64 KiB window, up to ~7 MB once the
  client's BDP probing has grown its window), so a slow client costs
  bounded memory, in bytes, whatever the stream's length. All streams
  together hold at most ``config.max_stream_buffer_bytes`` of chunks in their
  buffers (:class:`._pump.ByteBudget`); a stream nobody reads runs out first
  and ends with RESOURCE_EXHAUSTED.
* Closing the stream (the caller cancelled, disconnected, or stopped
  iterating) closes the handler's generator in its producer, so its
  ``finally`` blocks run (measured: ~1 ms after the client's cancel). A
  handler that ignores the close is abandoned after ``CLOSE_WAIT`` s and
  logged; the stream ends regardless and ``stats.active_streams`` (the
  generators being produced now) drops.
"""
from __future__ import annotations

import contextlib
import functools
import time
import traceback
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import _malloc
from ._lazy import lazy_module
from ._pump import END, AsyncPump, ByteBudget, ThreadPump
from ._session_state import estimate_size
from .calls import CallRecord, Encoded, Request, Result, Stats, encoded
from .chunks import Chunk, ChunkError, Final, as_chunk_data, encoded_chunk, to_chunk
from .codecs.values import encode_in_pieces, json_costly
from .config import Config
from .context import Context
from .errors import BridgeError, DeadlineExceeded, ResourceExhausted, ShuttingDown
from .logging import get_logger
from .registry import Handler, Kind, Registry
from .sessions import SessionStore, session_name

if TYPE_CHECKING:
    import asyncio
else:
    asyncio = lazy_module("asyncio")  # imported on first use: the stdio front end needs no loop (see _lazy.py)

__all__ = ["Dispatcher", "Request", "Result", "Stats"]

# How long closing a generator may take before it is abandoned (and logged).
CLOSE_WAIT = 0.25
# Arguments larger than this (wire bytes) are decoded in a worker thread.
OFFLOAD_BYTES = 1 << 20
# What becomes a call's error: a handler's sys.exit() must fail its call, not stop the
# worker. Not CancelledError or GeneratorExit: they are how a call is cancelled.
_FAILURES = (Exception, SystemExit, KeyboardInterrupt)


class Dispatcher:
    """Runs handlers from a :class:`Registry` for any transport."""

    def __init__(
        self,
        registry: Registry,
        config: Config | None = None,
        *,
        sessions: SessionStore | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.registry = registry
        self.config = config or Config()
        self.sessions = sessions if sessions is not None else SessionStore.from_config(self.config)
        # Their threads encode large values in pieces, so the loop gets the GIL between them.
        self.executor = executor or ThreadPoolExecutor(self.config.max_workers, thread_name_prefix="snakepit-handler",
                                                       initializer=encode_in_pieces)
        # Sync generators hold a thread for as long as their stream is open
        # (also while a slow reader keeps them waiting), so they get threads of
        # their own: open streams can never starve unary sync calls, and one
        # stream too many is refused instead of queued behind the others.
        self._stream_threads = ThreadPoolExecutor(self.config.max_workers, thread_name_prefix="snakepit-stream",
                                                  initializer=encode_in_pieces)
        self._threads_held = 0
        #: Bytes of chunks buffered by all open streams together.
        self.buffered = ByteBudget(self.config.max_stream_buffer_bytes, _chunk_bytes)
        self.stats = Stats()
        self.closing = False
        self.log = get_logger("snakepit_bridge.dispatch")
        # One line per call at info and debug; at warning only failed calls'.
        self._call_lines = self.config.log_level in ("debug", "info")
        self._lines: list[tuple[CallRecord, float]] = []  # calls ended this turn: (record, duration_ms)
        self._pumps: set[AsyncPump | ThreadPump] = set()
        self._abandoned: set[asyncio.Future[Any]] = set()  # strong refs to work past its deadline
        #: Runs a call's log line once the transport has answered; None: on the
        #: loop's next turn. A transport serving without a loop sets its own.
        self.defer: Callable[..., Any] | None = None

    # -- public API ---------------------------------------------------------------

    async def call(self, req: Request) -> Result:
        """Run one request to completion (see the module docstring)."""
        with self._observe(req) as obs:
            try:
                handler = await self.admit(req)
                if handler.streaming:
                    collected = await self._collect(req, obs)
                    if req.encode is not None:
                        collected.payload = await self._encode(collected.result, req.encode)
                    return collected
                ctx = self._context(req, handler)
                value = await self._off_loop(handler, await self._run_in_session(handler, req.handler_args, ctx,
                                                                                 req.encode), req.encode)
                return self._succeeded(value, req)
            except asyncio.CancelledError:
                obs.outcome = "cancelled"
                raise
            except _FAILURES as exc:
                return self._failed(exc, req, obs)

    def call_now(self, req: Request, handler: Handler | None = None) -> Result | None:
        """:meth:`call`, without waiting, when an inline handler answers ``req``
        outside a session and its arguments are decoded already: the answer
        is ready when this returns (a transport can write it from the callback
        that read the request). None when ``req`` needs :meth:`call` (nothing
        has been done then, not even counting it). ``handler``: the one the
        transport already looked up for ``req.command``."""
        if handler is None:
            handler = self.registry.find(req.command)
        if (handler is None or handler.kind is not Kind.INLINE or req.decode is not None or self.closing
                or req.session_id or "session_id" in req.args):
            return None
        # What ``with self._observe(req)`` does, without its objects: this is
        # every ping's path, and a call that succeeds logs nothing at warning.
        self.stats.requests += 1
        started = time.perf_counter()
        obs: CallRecord | None = None
        try:
            # A handler that takes no context gets none: it would only be built and dropped.
            ctx = self._context(req, handler) if handler.takes_ctx else None
            args = req.args if handler.params is None else handler.params.bind(req.args)
            return self._succeeded(handler.invoke(args, ctx), req)
        except _FAILURES as exc:
            obs = CallRecord(req, started)
            return self._failed(exc, req, obs)
        finally:
            if obs is not None or self._call_lines:
                self._ended(obs or CallRecord(req, started))

    def _succeeded(self, value: Any, req: Request) -> Result:
        if type(value) is not dict:  # a dict (the usual result) is its own chunk map
            if isinstance(value, Encoded):
                return Result(True, value.data, payload=value.payload)
            value = as_chunk_data(value)
        return encoded(Result(True, value), req)

    def _failed(self, exc: BaseException, req: Request, obs: CallRecord) -> Result:
        code, message, details, payload = self._wire_error(exc, req)
        obs.outcome, obs.error = "error", message
        return Result(False, details, message, code, payload=payload)

    async def stream(self, req: Request) -> AsyncGenerator[Chunk, None]:
        """Run one request as a stream of chunks (see the module docstring).

        The caller must iterate to the end or ``aclose()`` the iterator (e.g.
        with ``contextlib.aclosing``); closing it closes the handler's generator.
        """
        with self._observe(req) as obs:
            async with contextlib.aclosing(self._produce(req, obs)) as chunks:
                async for chunk in chunks:
                    yield chunk

    def failure(self, exc: BaseException, req: Request) -> tuple[str, str, dict[str, Any]]:
        """The one place an exception becomes a wire error: ``(code, message, details)``.

        Expected errors (:class:`BridgeError`) keep their code and message;
        anything else is logged with its traceback and reported as
        ``"<Type>: <message>"`` with the traceback under ``details["traceback"]``.
        """
        if isinstance(exc, _Escaped):
            exc = exc.args[0]  # a coroutine handler's SystemExit / KeyboardInterrupt
        if isinstance(exc, BridgeError):
            details = dict(exc.details)
            if exc.code == "RESOURCE_EXHAUSTED":
                # The code is not a field of the 0.3 messages: a cap reached says so
                # in the result map (Execute) or final chunk, for callers to test.
                details.setdefault("code", exc.code)
            return exc.code, exc.message, details
        tb = "".join(traceback.format_exception(exc))
        self.log.error("handler raised", command=req.command, request_id=req.request_id,
                       error=f"{type(exc).__name__}: {exc}", traceback=tb)
        return "UNKNOWN", f"{type(exc).__name__}: {exc}", {"traceback": tb}

    def _wire_error(self, exc: BaseException, req: Request, check: Callable[[dict[str, Any]], Any] | None = None
                    ) -> tuple[str, str, dict[str, Any], Any]:
        """:meth:`failure` plus the details' payload (``check``: the encoder they must
        pass though encoded later). Details that do not encode become ``{}``: the
        code and message must still reach the caller, as the call's one answer."""
        code, message, details = self.failure(exc, req)
        if (encode := req.encode or check) is None:
            return code, message, details, None
        try:
            payload = encode(details)
        except Exception as err:  # noqa: BLE001 - whatever the codec raises
            self.log.warning("error details could not be encoded; sent without them", command=req.command,
                             request_id=req.request_id, error=f"{type(err).__name__}: {err}")
            details, payload = {}, encode({})
        return code, message, details, payload if req.encode else None

    def interrupt_streams(self, exc: BridgeError | None = None) -> int:
        """End every open stream with a final error chunk (``ShuttingDown`` by
        default); returns how many were open. Used when the worker drains."""
        self.closing = True
        for pump in list(self._pumps):
            pump.interrupt(exc or ShuttingDown())
        return len(self._pumps)

    async def aclose(self) -> None:
        """Interrupt streams, close sessions (running their close hooks) and
        release the worker threads. Idempotent."""
        self.interrupt_streams()
        # Concurrently: N stuck generators cost one CLOSE_WAIT, not N.
        await asyncio.gather(*(pump.close(CLOSE_WAIT) for pump in list(self._pumps)))
        await self.sessions.close_all()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._stream_threads.shutdown(wait=False, cancel_futures=True)

    # -- internals ----------------------------------------------------------------

    async def admit(self, req: Request) -> Handler:
        """The handler for ``req``, with ``req.args`` decoded and, when the
        handler declares its parameters, ``req.bound`` checked and bound
        (InvalidArgument listing every problem otherwise). Idempotent."""
        if self.closing:
            raise ShuttingDown()
        handler = self.registry.get(req.command)
        params = handler.params
        if req.decode is not None:
            decode, req.decode = req.decode, None
            # A declared str (bytes) parameter reads its wire bytes as text (raw), not as JSON.
            hints = params.wire_hints() if params is not None else None
            # Tens of MB of JSON take hundreds of ms to parse: not on the loop,
            # where Health and every other call would wait for it.
            if req.decode_size > OFFLOAD_BYTES:
                _malloc.large_message()  # copy large messages into reused memory (and give it back when idle)
                req.args, req.bound = await asyncio.get_running_loop().run_in_executor(
                    self.executor, _decode_and_bind, decode, hints, params)
                return handler
            req.args = decode(hints) if hints else decode()
        if params is not None and req.bound is None:
            req.bound = params.bind(req.args)
        return handler

    def _context(self, req: Request, handler: Handler) -> Context:
        deadline = req.deadline
        if req.timeout_ms > 0:
            own = time.monotonic() + req.timeout_ms / 1000.0
            deadline = own if deadline is None else min(deadline, own)
        # Elixir sends strings raw: "1.5" arrives as JSON 1.5, still a session's name (session_name).
        session_id = req.session_id or (session_name(req.args["session_id"]) if "session_id" in req.args else "")
        session = self.sessions.get(session_id) if session_id else None
        return Context(
            request_id=req.request_id, command=req.command, deadline=deadline,
            session=session, log=self.log, dispatcher=self,
        )

    async def _run_in_session(self, handler: Handler, args: dict[str, Any], ctx: Context,
                              encode: Callable[[dict[str, Any]], Any] | None = None) -> Any:
        """A unary call; in a session it counts as in flight (the session is not
        expired under it) and holds the session's lock when ``config.session_lock``,
        both until the handler returns, also if that is after the call was abandoned:
        else the session's next call would run alongside it and lose updates."""
        if ctx.session is None:
            return await self._run_unary(handler, args, ctx, encode)
        # The deadline covers the wait for the session's lock too.
        remaining = ctx.time_remaining()
        scope = asyncio.timeout(None if remaining is None else max(0.0, remaining))
        try:
            async with scope, ctx.session.call_scope(lock=self.config.session_lock) as call:
                return await self._run_unary(handler, args, ctx, encode, call.outlive)
        except TimeoutError:
            if scope.expired():
                raise _deadline(ctx) from None
            raise

    async def _run_unary(self, handler: Handler, args: dict[str, Any], ctx: Context,
                         encode: Callable[[dict[str, Any]], Any] | None = None,
                         abandon: Callable[[Any], None] | None = None) -> Any:
        """``abandon(running)`` is told of work left running past the call."""
        if handler.kind is Kind.INLINE:
            return handler.invoke(args, ctx)  # on the loop, now: nothing to wait for or abandon
        running: Any  # what to watch if the call is abandoned: the task, or the thread's future
        if handler.kind is Kind.COROUTINE:
            work: asyncio.Future[Any] = asyncio.ensure_future(_contained(handler.invoke(args, ctx)))
            running = work
        elif encode is None:
            running = self.executor.submit(handler.invoke, args, ctx)
            work = asyncio.wrap_future(running)
        else:  # encode in the worker thread too: a large result never blocks the loop
            running = self.executor.submit(_invoke_encoded, handler, args, ctx, encode)
            work = asyncio.wrap_future(running)
        try:
            if ctx.deadline is None:
                return await asyncio.shield(work)
            done, _ = await asyncio.wait({work}, timeout=max(0.0, ctx.deadline - time.monotonic()))
            if not done:
                raise _deadline(ctx)
            return work.result()
        finally:
            if not work.done():
                # The caller left or the deadline passed: ask the handler to
                # stop, keep a reference until it does (it may never, if it
                # ignores cancellation) and do not wait for it.
                ctx.cancel()
                work.cancel()
                self._abandoned.add(work)
                work.add_done_callback(self._abandoned.discard)
                work.add_done_callback(_consume_exception)
                asyncio.get_running_loop().call_later(CLOSE_WAIT, self._check_abandoned, running, ctx)
                if abandon is not None:
                    abandon(running)

    async def _off_loop(self, handler: Handler, value: Any, encode: Callable[[dict[str, Any]], Any] | None) -> Any:
        """A coroutine's large result, encoded in a worker thread (as a sync
        handler's is) so that Health and other calls do not wait for it. An
        inline handler's result is small by contract: not measured."""
        if encode is None or isinstance(value, Encoded) or handler.kind is Kind.INLINE:
            return value
        data = as_chunk_data(value)
        if not json_costly(data, OFFLOAD_BYTES):
            return data
        return Encoded(data, await asyncio.get_running_loop().run_in_executor(self.executor, encode, data))

    async def _encode(self, data: dict[str, Any], encode: Callable[[dict[str, Any]], Any]) -> Any:
        """``encode(data)``; in a worker thread when its JSON may pass
        ``OFFLOAD_BYTES`` (JSON of 10 MB takes tens of ms), so that Health and
        other calls do not wait for it."""
        if json_costly(data, OFFLOAD_BYTES):
            return await asyncio.get_running_loop().run_in_executor(self.executor, encode, data)
        return encode(data)

    def _encode_on_loop_or_off(self, encode: Callable[[dict[str, Any]], Any], item: Any) -> Chunk | Any:
        """An async generator's item as an encoded chunk, for its pump: on the
        loop when small, else a future of it from a worker thread (the pump
        awaits it), so a large chunk of any handler kind is encoded off the loop."""
        chunk = to_chunk(item)
        if chunk.payload is None and json_costly(chunk.data, OFFLOAD_BYTES):
            return asyncio.get_running_loop().run_in_executor(self.executor, encoded_chunk, chunk, encode)
        return encoded_chunk(chunk, encode)

    def _check_abandoned(self, running: Any, ctx: Context) -> None:
        if not running.done():
            # A sync handler that never looks at ctx.cancelled keeps its thread.
            self.log.warning("handler still running %s s after its call ended; left to finish" % CLOSE_WAIT,
                             command=ctx.command, request_id=ctx.request_id)

    def _start(self, handler: Handler, args: dict[str, Any], ctx: Context,
               encode: Callable[[dict[str, Any]], Any] | None = None) -> AsyncPump | ThreadPump:
        # Chunks are built and encoded by the producer, before they are
        # buffered, so the buffer's bytes are known; for sync generators
        # that is their own thread, so a large value is never serialized on the event loop.
        transform = None if encode is None else (lambda item: encoded_chunk(to_chunk(item), encode))
        if handler.kind is Kind.ASYNC_GENERATOR:
            pump: AsyncPump | ThreadPump = AsyncPump(handler.invoke(args, ctx), self.config.stream_buffer,
                                                     self.buffered, None if encode is None else
                                                     functools.partial(self._encode_on_loop_or_off, encode))
        else:
            if self._threads_held >= self.config.max_workers:
                raise ResourceExhausted(f"all {self.config.max_workers} stream threads are held by open sync "
                                        "streams; close some, or raise --max-workers")
            pump = ThreadPump(handler.invoke(args, ctx), self.config.stream_buffer, self._stream_threads, transform,
                              self.buffered)
            # Counted until the thread is free again (an abandoned generator keeps it).
            self._threads_held += 1
            pump.task.add_done_callback(self._thread_freed)
        self._pumps.add(pump)
        self.stats.active_streams += 1
        return pump

    def _thread_freed(self, _: Any) -> None:
        self._threads_held -= 1

    def _arm_deadline(self, pump: AsyncPump | ThreadPump, ctx: Context) -> asyncio.TimerHandle | None:
        """One timer per stream (not one per chunk): at the deadline the handler's
        context is cancelled and the consumer's next ``get()`` raises."""
        if ctx.deadline is None:
            return None

        def expire() -> None:
            pump.interrupt(_deadline(ctx))

        return asyncio.get_running_loop().call_later(max(0.0, ctx.deadline - time.monotonic()), expire)

    async def _stop(self, pump: AsyncPump | ThreadPump, ctx: Context | None) -> None:
        try:
            finished = await pump.close(CLOSE_WAIT)
        finally:
            self._pumps.discard(pump)
            self.stats.active_streams -= 1
        where = dict(command=ctx.command if ctx else "", request_id=ctx.request_id if ctx else "")
        if not finished:
            # Python cannot stop a thread or a task that ignores its cancellation:
            # the stream ends now, the producer is left to finish on its own.
            self.log.warning("generator did not stop within %s s of being closed; abandoned" % CLOSE_WAIT, **where)
        elif pump.close_error is not None:
            self.log.warning("generator misbehaved when closed", error=f"{type(pump.close_error).__name__}: "
                             f"{pump.close_error}", **where)

    async def _produce(self, req: Request, obs: CallRecord, check: Callable[[dict[str, Any]], Any] | None = None,
                       sizes: list[int] | None = None) -> AsyncGenerator[Chunk, None]:
        """The stream's chunks; ``sizes`` (if given) gets each item's bytes as
        measured by its producer (for :meth:`_collect`)."""
        index = 0
        pump: AsyncPump | ThreadPump | None = None
        timer: asyncio.TimerHandle | None = None
        ctx: Context | None = None
        in_session = False
        try:
            handler = await self.admit(req)
            ctx = self._context(req, handler)
            if not handler.streaming:
                value = await self._off_loop(handler, await self._run_in_session(handler, req.handler_args, ctx,
                                                                                 req.encode), req.encode)
                obs.chunks = 1
                if isinstance(value, Encoded):
                    yield Chunk(value.data, is_final=True, payload=value.payload)
                else:
                    yield encoded_chunk(Chunk(as_chunk_data(value), is_final=True), req.encode)
                return
            if ctx.session is not None:
                # A stream in flight is use of its session (no lock: it would
                # block the session for as long as the stream is open).
                ctx.session.begin_call()
                in_session = True
            pump = self._start(handler, req.handler_args, ctx, req.encode)
            timer = self._arm_deadline(pump, ctx)
            debug = self.config.log_level == "debug"  # decided once: per-chunk lines cost nothing otherwise
            while True:
                item = await pump.get()
                if item is END:
                    break
                if sizes is not None:
                    sizes.append(pump.held)
                chunk = encoded_chunk(to_chunk(item), req.encode)
                chunk.index = index
                index += 1
                obs.chunks = index
                if debug:
                    ctx.log.debug("chunk", index=chunk.index, is_final=chunk.is_final, error=chunk.error or None)
                yield chunk
                if chunk.is_final:
                    return
            obs.chunks = index + 1
            if debug:
                ctx.log.debug("chunk", index=index, is_final=True, error=None)
            yield encoded_chunk(Chunk({}, is_final=True, index=index), req.encode)
        except (asyncio.CancelledError, GeneratorExit):
            obs.outcome = "cancelled"
            raise
        except _FAILURES as exc:
            code, message, details, payload = self._wire_error(exc, req, check)
            obs.outcome, obs.error, obs.chunks = "error", message, index + 1
            yield Chunk(details, is_final=True, error=message, index=index, code=code, payload=payload)
        finally:
            if timer is not None:
                timer.cancel()
            if ctx is not None:
                ctx.cancel()
            try:
                if pump is not None:
                    await self._stop(pump, ctx)
            finally:
                if in_session:
                    ctx.session.end_call()  # type: ignore[union-attr]

    async def _collect(self, req: Request, obs: CallRecord) -> Result:
        chunks: list[dict[str, Any]] = []
        errors: list[str] = []
        code = "UNKNOWN"
        limit, byte_limit, collected = self.config.max_execute_chunks, self.config.max_execute_bytes, 0
        sizes: list[int] = []
        inner = Request(req.command, req.args, req.request_id, req.timeout_ms, req.session_id, req.deadline, req.decode,
                        bound=req.bound)
        # Not encoded chunk by chunk (call() encodes the whole body), but error details checked.
        async with contextlib.aclosing(self._produce(inner, obs, req.encode, sizes)) as stream:
            async for chunk in stream:
                collected += sizes.pop() if sizes else 0
                if collected > byte_limit:
                    raise ResourceExhausted(self._execute_cap_message(req.command, byte_limit))
                if chunk.error:
                    if (chunk.code == "RESOURCE_EXHAUSTED" and chunk.data.get("cap") == "--max-stream-buffer-mb"
                            and collected + int(chunk.data.get("refused_bytes") or 0) > byte_limit):
                        # The chunk the stream budget refused would have passed this cap
                        # first: name the cap this call reached, not the streams'.
                        raise ResourceExhausted(self._execute_cap_message(req.command, byte_limit))
                    errors.append(chunk.error)
                    code = chunk.code or code
                if chunk.is_final and not chunk.data and not chunk.error:
                    break  # the empty closing chunk carries nothing
                if len(chunks) == limit:
                    raise ResourceExhausted(
                        f"command {req.command!r} streamed more than {limit} chunks; call it with ExecuteStream"
                    )
                chunks.append(chunk.data)
        obs.chunks = len(chunks)
        body = {"chunks": chunks, "chunk_count": len(chunks)}
        if errors:
            obs.outcome, obs.error = "error", errors[-1]
            return Result(False, body, errors[-1], code)
        obs.outcome = "ok"
        return Result(True, body)

    @staticmethod
    def _execute_cap_message(command: str, byte_limit: int) -> str:
        return (f"command {command!r} streamed more than {byte_limit // (1024 * 1024)} MB for one Execute "
                "answer (--max-execute-mb); call it with ExecuteStream")

    def _observe(self, req: Request) -> _Observed:
        """Count the call and log one line for it when it ends."""
        self.stats.requests += 1
        return _Observed(self, CallRecord(req))

    def _ended(self, obs: CallRecord) -> None:
        if obs.outcome == "error":
            self.stats.errors += 1
        elif not self._call_lines:
            return
        elif obs.outcome == "ok" and not obs.chunks:
            # The usual line, at once: logging holds it unrendered (a tuple
            # appended) and renders it with the others when it writes them.
            req = obs.request
            self.log.info("call", request_id=req.request_id, command=req.command,
                          duration_ms=round((time.perf_counter() - obs.started) * 1000, 3), outcome="ok")
            return
        lines = self._lines
        lines.append((obs, round((time.perf_counter() - obs.started) * 1000, 3)))
        # The others are logged on the loop's next turn, not now: the transport's
        # answer goes out first, and the client reads it while this line is written. The
        # calls that end in one turn share one callback (the serial stdio front
        # end, which has no loop turns, runs it after its answer instead).
        if len(lines) == 1:
            if self.defer is not None:
                self.defer(self._log_calls)
            else:
                asyncio.get_running_loop().call_soon(self._log_calls)

    def _log_calls(self) -> None:
        lines, self._lines = self._lines, []
        for obs, duration_ms in lines:
            self._log_call(obs, duration_ms)

    def _log_call(self, obs: CallRecord, duration_ms: float) -> None:
        req = obs.request
        fields = dict(request_id=req.request_id, command=req.command, duration_ms=duration_ms, outcome=obs.outcome)
        if obs.chunks:
            fields["chunks"] = obs.chunks
        if obs.error:
            fields["error"] = obs.error
        (self.log.warning if obs.outcome == "error" else self.log.info)("call", **fields)


class _Observed:
    """``with dispatcher._observe(req) as obs``: the call's record, logged at the end."""

    __slots__ = ("_dispatcher", "_record")

    def __init__(self, dispatcher: Dispatcher, record: CallRecord) -> None:
        self._dispatcher = dispatcher
        self._record = record

    def __enter__(self) -> CallRecord:
        return self._record

    def __exit__(self, *exc_info: Any) -> None:
        self._dispatcher._ended(self._record)


def _decode_and_bind(decode: Callable[..., dict[str, Any]], hints: dict[str, str] | None,
                     params: Any) -> tuple[dict[str, Any], Any]:
    args = decode(hints) if hints else decode()
    return args, (params.bind(args) if params is not None else None)


def _chunk_bytes(item: Any) -> int:
    """About the memory one buffered item holds: its encoded bytes when the
    producer encoded it, else a deep size estimate of its values."""
    if isinstance(item, Chunk):
        payload = item.payload
        if isinstance(payload, tuple) and payload and isinstance(payload[0], dict):
            return 64 + sum(len(k) + len(v) for k, v in payload[0].items())
        if isinstance(payload, (bytes, bytearray)):
            return 64 + len(payload)
        item = item.data
    elif isinstance(item, (Final, ChunkError)):
        item = item.data
    return 64 + estimate_size(item)


def _invoke_encoded(handler: Handler, args: dict[str, Any], ctx: Context,
                    encode: Callable[[dict[str, Any]], Any]) -> Encoded:
    data = as_chunk_data(handler.invoke(args, ctx))
    return Encoded(data, encode(data))


class _Escaped(Exception):
    """A coroutine handler's SystemExit / KeyboardInterrupt (``args[0]``) as an ordinary
    error: asyncio re-raises those out of a task into the loop, stopping the worker."""


async def _contained(coro: Any) -> Any:
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise _Escaped(exc) from exc


def _deadline(ctx: Context) -> DeadlineExceeded:
    ctx.cancel()
    return DeadlineExceeded(f"deadline exceeded: command {ctx.command!r} did not finish in time")


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved, so asyncio does not log "never retrieved"

