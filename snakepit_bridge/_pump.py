"""Producers behind bounded buffers.

A generator handler runs as a producer (an asyncio task for an async
generator, a worker thread for a sync one) that may run at most ``maxsize``
items ahead of its consumer: when the buffer is full the producer waits, and
it is woken again once the consumer has drained the buffer to half (so a
steady stream costs one producer wake-up per ``maxsize // 2`` items, not one
per item). The consumer is woken only when it is actually waiting.

Bytes as well as items: every pump of a worker shares one :class:`ByteBudget`
(``--max-stream-buffer-mb``) for the chunks it holds, counted from the moment
a producer buffers a chunk until the consumer asks for the next one (so the
chunk the transport is still sending counts too). A producer that would pass
the budget ends its stream with RESOURCE_EXHAUSTED. The last quarter of the
budget is kept for producers whose consumer is waiting for them (it keeps up):
streams nobody reads run out first, streams that are read keep going.

Closing a pump closes the generator in its own producer, so ``finally``
blocks and context managers run there, promptly for a generator that is
yielding; a producer that ignores the close is abandoned after a short wait
(the caller logs it), never awaited forever.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_module

if TYPE_CHECKING:
    import asyncio
else:
    asyncio = lazy_module("asyncio")  # imported on first use: the stdio front end needs no loop (see _lazy.py)

__all__ = ["AsyncPump", "ByteBudget", "ThreadPump", "END"]

END = object()  # sentinel returned by get() once the generator is exhausted
_ITEM, _END, _ERROR = 0, 1, 2


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ByteBudget:
    """Bytes of chunks buffered by all the pumps sharing it (thread-safe)."""

    def __init__(self, limit: int, measure: Callable[[Any], int]) -> None:
        self.limit = limit
        self.measure = measure  # bytes of one item
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int, reader_waiting: bool) -> bool:
        """Take ``n`` bytes if they fit; the last quarter only for a waiting reader."""
        with self._lock:
            if self.used + n > (self.limit if reader_waiting else self.limit - self.limit // 4):
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        if n:
            with self._lock:
                self.used -= n

    def exhausted(self, n: int = 0) -> BaseException:
        """The error ending a stream whose chunk of ``n`` bytes did not fit.
        Its details name the cap and the chunk (Execute, collecting a
        stream, tells its own cap apart by them)."""
        from .errors import ResourceExhausted

        mb = self.limit // (1024 * 1024)
        details = {"cap": "--max-stream-buffer-mb", "refused_bytes": n}
        if n > self.limit - self.limit // 4:
            return ResourceExhausted(
                f"one chunk of {n} bytes is larger than the stream buffer budget of {mb} MB "
                "(--max-stream-buffer-mb); this stream was ended", details=details)
        return ResourceExhausted(
            f"streams not being read hold more than {mb} MB of buffered chunks "
            "(--max-stream-buffer-mb); this stream was ended", details=details)


class _Pump:
    """The consumer side both pumps share: a deque, a waiter, an interrupt."""

    def __init__(self, maxsize: int, budget: ByteBudget | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: deque[tuple[int, Any, int]] = deque()  # (kind, value, bytes taken from the budget)
        self._budget = budget
        self._held = 0  # bytes of the item the consumer has now (given back when it asks for the next)
        self.refused = 0  # bytes of the last item measured (named when the budget refuses it)
        self._maxsize = maxsize
        self._low = maxsize // 2  # refill mark: wake the producer at or below this
        self._waiter: asyncio.Future[None] | None = None  # the consumer, waiting for an item
        self._interrupt: BaseException | None = None
        #: What closing the generator raised (e.g. it ignored GeneratorExit), if anything.
        self.close_error: BaseException | None = None
        #: Items produced so far (for tests and logs).
        self.produced = 0

    def interrupt(self, exc: BaseException) -> None:
        """Make the consumer's next ``get()`` raise ``exc`` (shutdown, deadline).
        Call on the event loop thread."""
        self._interrupt = exc
        if self._waiter is not None:
            _wake(self._waiter)

    def _pop(self) -> tuple[int, Any, int] | None:
        """The oldest entry; or None, having installed ``self._waiter`` (atomically
        with finding the buffer empty, so a producer cannot slip past it)."""
        raise NotImplementedError

    def _charge(self, item: Any) -> int | None:
        """Bytes taken from the budget for ``item`` (0 without one); None when it is spent."""
        if self._budget is None:
            return 0
        n = self._budget.measure(item)
        self.refused = n
        return n if self._budget.take(n, reader_waiting=self._waiter is not None) else None

    def _release(self, entries: Any = ()) -> None:
        """Give back the held item's bytes and those of ``entries`` (dropped)."""
        if self._budget is not None:
            self._budget.give(self._held + sum(e[2] for e in entries))
        self._held = 0

    @property
    def held(self) -> int:
        """Bytes of the item the last ``get()`` returned, as its producer measured them."""
        return self._held

    async def get(self) -> Any:
        """The next item, :data:`END`, or the generator's exception raised."""
        if self._held:
            self._release()  # the consumer is done with the previous item
        while True:
            if self._interrupt is not None:
                raise self._interrupt
            entry = self._pop()
            if entry is None:
                try:
                    await self._waiter  # type: ignore[misc]
                finally:
                    self._waiter = None
                continue
            kind, value, self._held = entry
            if kind == _ITEM:
                return value
            if kind == _END:
                return END
            raise value


class AsyncPump(_Pump):
    """Runs an async generator in its own task."""

    def __init__(self, agen: AsyncGenerator[Any, None], maxsize: int, budget: ByteBudget | None = None,
                 transform: Callable[[Any], Any] | None = None) -> None:
        super().__init__(maxsize, budget)
        self._agen = agen
        # Applied to each item before it is buffered (and measured); it may return
        # a future of the item (work done off the loop), which is awaited.
        self._transform = transform
        self._closing = False
        self._space: asyncio.Future[None] | None = None  # the producer, waiting for room
        self.task = self._loop.create_task(self._run(), name="snakepit-producer")

    def _push(self, kind: int, value: Any, size: int = 0) -> None:
        self._items.append((kind, value, size))
        if self._waiter is not None:
            _wake(self._waiter)

    async def _run(self) -> None:
        agen, items, maxsize = self._agen, self._items, self._maxsize
        try:
            while not self._closing:
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    self._push(_END, None)
                    return
                if self._closing:
                    return
                if self._transform is not None:
                    item = self._transform(item)
                    if isinstance(item, asyncio.Future):  # the transform went off the loop
                        item = await item
                size = self._charge(item)
                if size is None:
                    self._push(_ERROR, self._budget.exhausted(self.refused))  # type: ignore[union-attr]
                    return
                self.produced += 1
                self._push(_ITEM, item, size)
                if len(items) >= maxsize:
                    self._space = self._loop.create_future()
                    await self._space
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            if not self._closing:
                self._push(_ERROR, exc)
        finally:
            try:
                await agen.aclose()
            except BaseException as exc:  # noqa: BLE001 - e.g. a generator that ignores GeneratorExit
                self.close_error = exc

    def _pop(self) -> tuple[int, Any, int] | None:
        if not self._items:
            self._waiter = self._loop.create_future()
            return None
        entry = self._items.popleft()
        if self._space is not None and len(self._items) <= self._low:
            _wake(self._space)
            self._space = None
        return entry

    async def close(self, wait: float) -> bool:
        """Stop the producer and close the generator; True if it finished within ``wait`` s."""
        self._closing = True
        self._release(self._items)
        self._items.clear()
        if not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=wait)
        return self.task.done()


class ThreadPump(_Pump):
    """Runs a sync generator in a worker thread.

    The deque is shared with the thread under a plain lock that either side
    holds only to append or pop (never while running the generator), so the
    event loop never waits on it for long.
    """

    def __init__(self, gen: Generator[Any, None, None], maxsize: int, executor: Executor,
                 transform: Callable[[Any], Any] | None = None, budget: ByteBudget | None = None) -> None:
        super().__init__(maxsize, budget)
        self._gen = gen
        # Applied to each item in the producer thread (dispatch encodes chunks
        # here, so a large value is never serialized on the event loop).
        self._transform = transform
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)  # the producer waits here for room
        self._closing = False
        self.task = self._loop.run_in_executor(executor, self._run)

    def _run(self) -> None:
        gen, items, maxsize, space = self._gen, self._items, self._maxsize, self._space
        try:
            while True:
                with space:
                    while len(items) >= maxsize and not self._closing:
                        space.wait()
                    if self._closing:
                        return
                try:
                    item = next(gen)
                except StopIteration:
                    self._push(_END, None)
                    return
                if self._closing:
                    return
                if self._transform is not None:
                    item = self._transform(item)
                size = self._charge(item)
                if size is None:
                    self._push(_ERROR, self._budget.exhausted(self.refused))  # type: ignore[union-attr]
                    return
                self.produced += 1
                self._push(_ITEM, item, size)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            if not self._closing:
                self._push(_ERROR, exc)
        finally:
            try:
                gen.close()  # in this thread: the generator's finalizers run here
            except BaseException as exc:  # noqa: BLE001 - e.g. it ignored GeneratorExit
                self.close_error = exc

    def _push(self, kind: int, value: Any, size: int = 0) -> None:
        with self._lock:
            if self._closing:  # close() already gave back what was buffered
                if self._budget is not None:
                    self._budget.give(size)
                return
            self._items.append((kind, value, size))
            waiter = self._waiter
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

    def _pop(self) -> tuple[int, Any, int] | None:
        with self._lock:
            if not self._items:
                self._waiter = self._loop.create_future()
                return None
            entry = self._items.popleft()
            if len(self._items) <= self._low:
                self._space.notify()
            return entry

    async def close(self, wait: float) -> bool:
        """Stop the producer and close the generator; True if it finished within ``wait`` s."""
        with self._lock:
            self._closing = True
            self._release(self._items)
            self._items.clear()
            self._space.notify_all()  # wake a producer waiting for room
        if not self.task.done():
            await asyncio.wait({self.task}, timeout=wait)
        return self.task.done()
