"""Running session close hooks off the event loop, in daemon threads.

A hook that hangs must never keep the process alive (a ThreadPoolExecutor's
workers are joined at interpreter exit), nor starve the other hooks.
"""
from __future__ import annotations

import contextlib
import inspect
import queue
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_module

if TYPE_CHECKING:
    import asyncio
else:
    asyncio = lazy_module("asyncio")  # imported on first use: the stdio front end needs no loop (see _lazy.py)

__all__ = ["HOOK_THREADS", "Hook", "run_hook", "run_hooks_sync"]

Hook = Callable[[], Any]

# Sync close hooks running at once (each in its own daemon thread).
HOOK_THREADS = 16


class _DaemonThreads:
    """Reusable daemon threads for close hooks.

    Not a ThreadPoolExecutor (nor ``asyncio.to_thread``): their workers are
    joined at interpreter exit, so one hook that hangs would keep the process
    alive. A thread is started only when no idle one is free, so a hung hook
    costs one thread and never starves the others; idle threads leave after
    ``IDLE_EXIT`` seconds.
    """

    IDLE_EXIT = 30.0

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Hook, asyncio.AbstractEventLoop, asyncio.Future[Any]]] = \
            queue.SimpleQueue()
        self._idle = 0  # idle workers no job has been promised to
        self._lock = threading.Lock()

    def run(self, fn: Hook) -> asyncio.Future[Any]:
        """Run ``fn`` in a daemon thread; a future (of the running loop) for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # promised to this job
        self._jobs.put((fn, loop, future))
        if spawn:
            threading.Thread(target=self._work, name="session-close-hook", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            try:
                fn, loop, future = self._jobs.get(timeout=self.IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # one unpromised idle worker may leave: this one
                        self._idle -= 1
                        return
                continue
            try:
                result, exc = fn(), None
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                result, exc = None, e
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, result, exc)
            del fn, future, result, exc  # hold nothing of a finished hook while idle
            with self._lock:
                self._idle += 1


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return  # abandoned after a timeout
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


_HOOK_THREADS = _DaemonThreads()
#: Run a sync hook in a daemon thread; returns a future of the running loop.
run_hook = _HOOK_THREADS.run


def run_hooks_sync(hooks: Iterable[tuple[str, Hook]], on_error: Callable[[str, str, BaseException], None],
                    session_id: str) -> tuple[int, int]:
    count = failed = 0
    for name, hook in hooks:
        count += 1
        try:
            result = hook()
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))
        except Exception as exc:  # noqa: BLE001
            failed += 1
            on_error(session_id, name, exc)
    return count, failed


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
