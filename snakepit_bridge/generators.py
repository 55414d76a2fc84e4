"""Pull-based generator sessions: InitGenerator / GetNextBatch / CloseGenerator.

A pull generator is an ordinary :meth:`Dispatcher.stream` that the client
drains in batches instead of receiving as a server stream, so everything the
dispatch core guarantees holds here too: one final chunk, last; per-item error
chunks; the handler's generator closed (finalizers run) whenever the stream
ends, is closed, or is reaped.

Contracts:

* ``open(req)`` checks the command exists and decodes the arguments; errors
  come back as ``("", message)``. The handler does not start until the first
  ``next_batch`` (so an idle InitGenerator costs nothing but a record).
* ``timeout_ms`` bounds the generator's whole life, measured from
  InitGenerator: once it passes, the next batch ends with a final chunk whose
  error says the deadline was exceeded (and the reaper closes a generator
  nobody pulls any more). ``0`` means no deadline; the TTL still applies.
* ``next_batch(id, n)`` returns at most ``n`` chunks, waiting until it has
  ``n`` or the stream ended; the final chunk is one of the ``n``.
  ``has_more`` is False once the final chunk has been returned, after which
  the id is finished. For a slow generator prefer small batches, or give
  GetNextBatch an RPC deadline: a cut-off batch loses nothing (below).
  ``n == 0`` (the proto's unset value) means
  :data:`DEFAULT_BATCH`; ``n < 0`` is an error; ``n`` above
  ``config.max_execute_chunks`` is clamped to it, and a batch also stops
  short (at least one chunk) once it holds half of ``--max-message-mb`` of
  encoded values, so one response always fits in a gRPC message. An error the handler raises arrives as the final chunk's
  ``error``; the batch's own ``error`` is only for the request (unknown,
  finished or closed id, bad batch size).
* A batch interrupted by the caller (RPC deadline, cancel) loses nothing: the
  chunks already taken and the pull in flight are kept for the next batch.
* Generators idle (no batch asked) for ``config.generator_ttl`` seconds are
  closed by the reaper; at most ``config.max_generators`` are open at once,
  holding at most ``config.max_generator_args_bytes`` of arguments together
  (wire bytes, ``--max-generator-args-mb``; beyond it InitGenerator fails
  with RESOURCE_EXHAUSTED in its error).
* ``close(id)`` is idempotent for a generator that existed; an unknown id is
  an error string. Nothing here raises to the transport.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator

from .chunks import Chunk
from .config import Config
from .dispatch import Dispatcher, Request
from .logging import get_logger

__all__ = ["GeneratorStore", "DEFAULT_BATCH"]

#: Batch size used when a GetNextBatch request leaves ``batch_size`` unset (0).
DEFAULT_BATCH = 10
#: How many ended generator ids are remembered, so a late call gets "finished"
#: or "closed" rather than "unknown".
REMEMBER_ENDED = 1024
# How long closing waits for a pull in flight to stop.
CLOSE_WAIT = 0.5


class _Generator:
    """One open pull generator and the state a batch may leave behind."""

    __slots__ = ("id", "command", "stream", "deadline", "last_used", "lock", "pending", "pending_bytes",
                 "max_bytes", "filling", "done", "closed", "arg_bytes")

    def __init__(self, gid: str, req: Request, stream: AsyncGenerator[Chunk, None], max_bytes: int) -> None:
        self.id = gid
        self.command = req.command
        self.stream = stream
        self.deadline = req.deadline
        self.last_used = time.monotonic()
        self.lock = asyncio.Lock()  # one batch at a time per generator
        self.pending: deque[Chunk] = deque()  # pulled, not yet delivered
        self.pending_bytes = 0
        self.max_bytes = max_bytes  # a batch's budget: it must fit in one gRPC message
        self.filling: asyncio.Task[None] | None = None  # the pull in flight, if any
        self.done = False  # the final chunk has been pulled
        self.closed = False
        self.arg_bytes = req.decode_size  # what its arguments hold, counted against the store's cap

    def _wants(self, n: int) -> bool:
        return len(self.pending) < n and self.pending_bytes < self.max_bytes and not self.done

    async def _fill(self, n: int) -> None:
        """Pull until ``n`` chunks (or a batch's worth of bytes) are pending, or the
        final one is. Runs as its own task (one per batch, not per chunk) so a
        cancelled batch loses nothing."""
        while self._wants(n):
            chunk = await self.stream.__anext__()
            self.pending.append(chunk)
            self.pending_bytes += _size(chunk)
            if chunk.is_final:
                self.done = True

    async def take(self, n: int) -> list[Chunk]:
        """Up to ``n`` chunks, stopping after the final one."""
        while self._wants(n) and not self.closed:
            if self.filling is None:
                self.filling = asyncio.ensure_future(self._fill(n))
            try:
                # Shielded: if this batch is cancelled, the pull goes on and its
                # chunks are there for the next batch.
                await asyncio.shield(self.filling)
            except asyncio.CancelledError:
                if not self.closed:
                    raise
                break  # closed under us: return what we have
            except StopAsyncIteration:  # the stream ended without a final chunk: cannot happen
                self.done = True
            finally:
                if self.filling is not None and self.filling.done():
                    self.filling = None
        batch: list[Chunk] = []
        used = 0
        while self.pending and len(batch) < n:
            size = _size(self.pending[0])
            if batch and used + size > self.max_bytes:
                break  # the rest goes in the next batch
            batch.append(self.pending.popleft())
            used += size
        self.pending_bytes -= used
        return batch

    async def aclose(self) -> None:
        """Stop the handler (its generator is closed in its producer)."""
        self.closed = True
        filling, self.filling = self.filling, None
        if filling is not None and not filling.done():
            filling.cancel()  # the stream's own finally closes the handler's generator
            await asyncio.wait({filling}, timeout=CLOSE_WAIT)
        if filling is not None and filling.done() and not filling.cancelled():
            filling.exception()  # retrieved, so asyncio does not log it
        if filling is None or filling.done():
            with contextlib.suppress(RuntimeError):  # still running if the pull ignored its cancel
                await self.stream.aclose()
        self.pending.clear()
        self.pending_bytes = 0


def _size(chunk: Chunk) -> int:
    """About what ``chunk`` adds to a response: its encoded values and keys."""
    payload = chunk.payload
    if isinstance(payload, tuple) and payload and isinstance(payload[0], dict):
        return 32 + sum(len(k) + len(v) for k, v in payload[0].items())
    return 32


class GeneratorStore:
    """The open pull generators of one worker (see the module docstring)."""

    def __init__(self, dispatcher: Dispatcher, config: Config | None = None) -> None:
        self.dispatcher = dispatcher
        self.config = config or dispatcher.config
        self.log = get_logger("snakepit_bridge.generators")
        self._open: dict[str, _Generator] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()  # id -> why it ended
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False
        self.arg_bytes = 0  # arguments held by open generators together

    def __len__(self) -> int:
        return len(self._open)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the reaper (call from the running loop)."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="snakepit-generator-reaper")

    async def aclose(self) -> None:
        """Stop the reaper and close every open generator. Idempotent."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for gid in list(self._open):
            await self._end(gid, "the worker shut down")

    # -- the three RPCs ----------------------------------------------------------------

    async def open(self, req: Request) -> tuple[str, str]:
        """Register a generator for ``req``; ``(generator_id, "")`` or ``("", error)``."""
        if self._closing or self.dispatcher.closing:
            return "", "worker is shutting down"
        limit = self.config.max_generators
        if len(self._open) >= limit:
            self.log.warning("generator refused: cap reached", command=req.command, max_generators=limit)
            return "", f"too many open generators ({limit}); close some with CloseGenerator or wait for them to finish"
        cap = self.config.max_generator_args_bytes
        if self.arg_bytes + req.decode_size > cap:
            self.log.warning("generator refused: argument bytes cap reached", command=req.command,
                             held_bytes=self.arg_bytes, max_bytes=cap)
            return "", (f"RESOURCE_EXHAUSTED: open generators' arguments would pass {cap // (1024 * 1024)} MB "
                        "(--max-generator-args-mb); close some with CloseGenerator")
        try:
            # Decoded and, for a command that declares its parameters, checked now:
            # bad arguments are this call's error, not the first batch's.
            handler = await self.dispatcher.admit(req)
        except Exception as exc:  # noqa: BLE001 - reported through the one mapping in dispatch
            _code, message, _details = self.dispatcher.failure(exc, req)
            self.log.warning("generator refused", command=req.command, error=message)
            return "", message
        # The life bound counts from now, not from the first pull (see module docstring).
        if req.timeout_ms > 0:
            own = time.monotonic() + req.timeout_ms / 1000.0
            req.deadline = own if req.deadline is None else min(req.deadline, own)
            req.timeout_ms = 0
        gid = uuid.uuid4().hex
        if not req.request_id:
            req.request_id = gid
        self._open[gid] = _Generator(gid, req, self.dispatcher.stream(req), self.config.max_message_bytes // 2)
        self.arg_bytes += req.decode_size
        self.log.info("generator opened", generator_id=gid, command=req.command,
                      streaming=handler.streaming, open=len(self._open))
        return gid, ""

    async def next_batch(self, generator_id: str, batch_size: int) -> tuple[list[Chunk], bool, str]:
        """``(chunks, has_more, error)``; see the module docstring."""
        gen = self._open.get(generator_id)
        if gen is None:
            return [], False, self._gone(generator_id)
        if batch_size < 0:
            return [], True, f"batch_size must be >= 0 (0 means {DEFAULT_BATCH}), got {batch_size}"
        n = min(batch_size or DEFAULT_BATCH, self.config.max_execute_chunks)
        async with gen.lock:
            gen.last_used = time.monotonic()
            if gen.closed:
                return [], False, self._gone(generator_id)
            batch = await gen.take(n)
            gen.last_used = time.monotonic()
            if gen.closed and not gen.done:
                return batch, False, self._gone(generator_id)
        if gen.done and not gen.pending:
            # The final chunk is delivered: close the stream now (it ran its own
            # cleanup already, or does so here) and forget the id.
            await self._end(generator_id, "finished")
            return batch, False, ""
        return batch, True, ""

    async def close(self, generator_id: str) -> str:
        """Close a generator (running its finalizers); ``""`` or an error."""
        if generator_id in self._open:
            await self._end(generator_id, "closed by CloseGenerator")
            return ""
        if generator_id in self._ended:
            return ""  # idempotent
        return f"unknown generator id {generator_id!r}"

    # -- internals ---------------------------------------------------------------------

    def _gone(self, generator_id: str) -> str:
        why = self._ended.get(generator_id)
        if why is None:
            return f"unknown generator id {generator_id!r}"
        return f"generator {generator_id!r} is no longer open: {why}"

    async def _end(self, generator_id: str, why: str) -> None:
        gen = self._open.pop(generator_id, None)
        if gen is None:
            return
        self.arg_bytes -= gen.arg_bytes
        self._ended[generator_id] = why
        while len(self._ended) > REMEMBER_ENDED:
            self._ended.popitem(last=False)
        await gen.aclose()
        self.log.info("generator ended", generator_id=generator_id, command=gen.command, reason=why,
                      open=len(self._open))

    async def _reap(self) -> None:
        ttl = self.config.generator_ttl
        interval = max(0.05, min(1.0, ttl / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self._reap_once(ttl)
            except Exception:  # the reaper must outlive one bad close (logged with its traceback)
                self.log.exception("generator reaper failed; retrying")

    async def _reap_once(self, ttl: float) -> None:
        now = time.monotonic()
        for gid, gen in list(self._open.items()):
            if gen.lock.locked():
                continue  # a batch is being taken: not idle
            if now - gen.last_used > ttl:
                self.log.warning("generator idle past its ttl; closing", generator_id=gid,
                                 command=gen.command, ttl_s=ttl)
                await self._end(gid, f"idle for more than {ttl:g} s (generator ttl)")
            elif gen.deadline is not None and now > gen.deadline:
                self.log.warning("generator past its deadline; closing", generator_id=gid, command=gen.command)
                await self._end(gid, "deadline exceeded (timeout_ms)")
