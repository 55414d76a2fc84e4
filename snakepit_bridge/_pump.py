"""Producers behind bounded buffers.

A generator handler runs as a producer (an asyncio task for an async
generator, a worker thread for a sync one) that may run at most ``maxsize``
items ahead of its consumer. Closing a pump closes the generator in its own
producer, so ``finally`` blocks and context managers run there, promptly for a
generator that is yielding; a producer that ignores the close is abandoned
after a short wait (and logged by the caller), never awaited forever.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Generator
from concurrent.futures import Executor
from typing import Any

__all__ = ["AsyncPump", "ThreadPump", "END"]

END = object()  # sentinel returned by get() once the generator is exhausted
_ITEM, _END, _ERROR = 0, 1, 2


class AsyncPump:
    """Runs an async generator in its own task behind an ``asyncio.Queue``."""

    def __init__(self, agen: AsyncGenerator[Any, None], maxsize: int) -> None:
        self._agen = agen
        self._queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(maxsize)
        self._closing = False
        self.close_error: BaseException | None = None
        self._interrupt: BaseException | None = None
        self.task = asyncio.get_running_loop().create_task(self._run(), name="snakepit-producer")

    async def _run(self) -> None:
        agen = self._agen
        try:
            while not self._closing:
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    await self._queue.put((_END, None))
                    return
                if self._closing:
                    return
                await self._queue.put((_ITEM, item))
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            if not self._closing:
                await self._queue.put((_ERROR, exc))
        finally:
            try:
                await agen.aclose()
            except BaseException as exc:  # noqa: BLE001 - e.g. a generator that ignores GeneratorExit
                self.close_error = exc

    def interrupt(self, exc: BaseException) -> None:
        """Make the consumer's next ``get()`` raise ``exc`` (e.g. shutdown)."""
        self._interrupt = exc
        if self._queue.empty():
            self._queue.put_nowait((_ERROR, exc))

    async def get(self) -> Any:
        """The next item, :data:`END`, or the generator's exception raised."""
        if self._interrupt is not None:
            raise self._interrupt
        kind, value = await self._queue.get()
        if kind == _ITEM:
            return value
        if kind == _END:
            return END
        raise value

    async def close(self, wait: float) -> bool:
        """Stop the producer and close the generator; True if it finished within ``wait`` s."""
        self._closing = True
        if not self.task.done():
            self.task.cancel()
            while not self._queue.empty():  # unblock a producer stuck on a full queue
                self._queue.get_nowait()
            await asyncio.wait({self.task}, timeout=wait)
        return self.task.done()


class ThreadPump:
    """Runs a sync generator in a worker thread; a semaphore bounds its lead."""

    def __init__(self, gen: Generator[Any, None, None], maxsize: int, executor: Executor) -> None:
        self._gen = gen
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()  # bounded by _space
        self._space = threading.Semaphore(maxsize)
        self._closing = threading.Event()
        self._interrupt: BaseException | None = None
        self.task = self._loop.run_in_executor(executor, self._run)

    def _run(self) -> None:
        gen = self._gen
        try:
            while True:
                self._space.acquire()
                if self._closing.is_set():
                    return
                try:
                    item = next(gen)
                except StopIteration:
                    self._put(_END, None)
                    return
                if self._closing.is_set():
                    return
                self._put(_ITEM, item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(_ERROR, exc)
        finally:
            gen.close()  # in this thread: the generator's finalizers run here

    def _put(self, kind: int, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def interrupt(self, exc: BaseException) -> None:
        """Make the consumer's next ``get()`` raise ``exc`` (e.g. shutdown)."""
        self._interrupt = exc
        self._queue.put_nowait((_ERROR, exc))

    async def get(self) -> Any:
        if self._interrupt is not None:
            raise self._interrupt
        kind, value = await self._queue.get()
        if kind == _ITEM:
            self._space.release()
            return value
        if kind == _END:
            return END
        raise value

    async def close(self, wait: float) -> bool:
        self._closing.set()
        self._space.release()  # wake a producer waiting for room
        if not self.task.done():
            await asyncio.wait({self.task}, timeout=wait)
        return self.task.done()
