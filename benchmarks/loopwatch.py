"""Run a bridge script with its event loop watched (for ``benchmarks.soak``).

    python -m benchmarks.loopwatch OUT.json /path/to/grpc_bridge.py --port 0 ...

The script runs unchanged (any checkout: nothing of ``snakepit_bridge`` is
imported here); only the loop that ``asyncio.new_event_loop()`` returns is
instrumented, from outside:

* **lag**: a timer due every 10 ms records how late it ran (what any callback
  made ready at that moment, e.g. Health's first step, waits at least);
* **turns**: each loop iteration's work (its ready callbacks, the selector's
  wait excluded) in ms, and how many callbacks it ran;
* **slow callbacks**: those over 5 ms, by name (count, total, max);
* **codec**: the protobuf parse / serialize grpc.aio runs on the loop, per method;
* **threads**: CPU of the main thread (the loop) and of all other threads.

Every second the figures so far go to ``OUT.json`` (the bridge ends with
``os._exit``: nothing runs at exit), turns as histograms. Benchmark tooling only: it uses asyncio's private
``_run_once``/``_ready``, so it belongs here, not in the bridge.
"""
from __future__ import annotations

import asyncio
import json
import os
import runpy
import sys
import time
from collections import Counter, deque
from typing import Any

_TICK = 0.010


#: Callbacks that ran longer than _SLOW_MS: name -> [count, total ms, max ms].
_SLOW: dict[str, list[float]] = {}
_SLOW_MS = 5.0


def _name(handle: asyncio.Handle) -> str:
    cb = getattr(handle, "_callback", None)
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        return f"task {getattr(coro, '__qualname__', coro)}"
    return getattr(cb, "__qualname__", repr(cb))


def _time_callbacks() -> None:
    """Time every loop callback (asyncio's own debug mode does so too)."""
    run = asyncio.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        t0 = time.perf_counter()
        run(handle)
        ms = (time.perf_counter() - t0) * 1000
        if ms > _SLOW_MS:
            entry = _SLOW.setdefault(_name(handle), [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += ms
            entry[2] = max(entry[2], ms)

    asyncio.Handle._run = timed  # type: ignore[method-assign]


#: Protobuf work gRPC does on the loop, per method: name -> [count, total ms, max ms, count over 5 ms].
_CODEC: dict[str, list[float]] = {}


#: For Health: the monotonic times of each request's parse, handler start and
#: response serialization (the soak lines them up with its probe's send and receive).
_HEALTH: dict[str, list[float]] = {"parse": [], "handler": [], "serialize": []}


def _timed_codec(name: str, fn: Any) -> Any:
    if fn is None:
        return None
    marks = _HEALTH["parse" if name == "Health parse" else "serialize"] if name.startswith("Health ") else None

    def timed(value: Any) -> Any:
        if marks is not None:
            marks.append(time.monotonic())
        t0 = time.perf_counter()
        try:
            return fn(value)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            entry = _CODEC.setdefault(name, [0, 0.0, 0.0, 0])
            entry[0] += 1
            entry[1] += ms
            entry[2] = max(entry[2], ms)
            entry[3] += ms > _SLOW_MS

    return timed


def _marked(behavior: Any) -> Any:
    async def Health(request: Any, context: Any) -> Any:
        _HEALTH["handler"].append(time.monotonic())
        return await behavior(request, context)

    return Health


def _time_codecs() -> None:
    """Time the request parse and response serialization grpc.aio runs on the
    loop, by wrapping what the generated code registers (done before it runs)."""
    import grpc

    for kind in ("unary_unary", "unary_stream"):
        original = getattr(grpc, f"{kind}_rpc_method_handler")

        def wrapped(behavior: Any, request_deserializer: Any = None, response_serializer: Any = None,
                    _original: Any = original) -> Any:
            name = getattr(behavior, "__name__", "?")
            if name == "Health":
                behavior = _marked(behavior)
            return _original(behavior, _timed_codec(f"{name} parse", request_deserializer),
                             _timed_codec(f"{name} serialize", response_serializer))

        setattr(grpc, f"{kind}_rpc_method_handler", wrapped)


def _threads_cpu() -> dict[str, float]:
    """Seconds on CPU and waiting for one (runnable, not running: the
    machine's other load) of the main thread and of all others together,
    from /proc/self/task/*/schedstat."""
    out = {"main": 0.0, "others": 0.0, "main_waiting": 0.0, "others_waiting": 0.0}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
                on_cpu, waiting = (int(x) / 1e9 for x in f.read().split()[:2])
        except OSError:
            continue
        who = "main" if int(tid) == os.getpid() else "others"
        out[who] += on_cpu
        out[f"{who}_waiting"] += waiting
        if who == "others":
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    name = f.read().strip()
            except OSError:
                continue
            out[f"thread {name}"] = out.get(f"thread {name}", 0.0) + on_cpu
    return out


class _CountingDeque(deque):  # type: ignore[type-arg]
    """asyncio's ready queue, counting what each turn pops (it pops exactly
    the callbacks it runs)."""

    popped = 0

    def popleft(self) -> Any:
        self.popped += 1
        return super().popleft()


class _WatchedLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    def __init__(self, out: str) -> None:
        super().__init__()
        self._out = out
        self.lags: list[float] = []
        self.turns: Counter[int] = Counter()  # turn work in 0.1 ms steps -> turns
        self.sizes: Counter[int] = Counter()  # callbacks a turn ran -> turns
        self.work = 0.0  # seconds of turn work in all (wall)
        self.work_cpu = 0.0  # the main thread's CPU seconds in them
        self.selected = 0.0
        self._ready: _CountingDeque = _CountingDeque(self._ready)
        self._next = time.monotonic() + _TICK
        self._last_dump = time.monotonic()
        select = self._selector.select

        def timed_select(timeout: float | None = None) -> Any:
            t0 = time.perf_counter()
            try:
                return select(timeout)
            finally:
                self.selected += time.perf_counter() - t0

        self._selector.select = timed_select  # type: ignore[method-assign]
        self.call_soon(self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        self.lags.append((now - self._next) * 1000)
        self._next = now + _TICK
        self.call_at(self._next, self._tick)
        if now - self._last_dump >= 1.0:
            self._last_dump = now
            self._dump()

    def _run_once(self) -> None:
        self.selected = 0.0
        self._ready.popped = 0
        t0, c0 = time.perf_counter(), time.thread_time()
        super()._run_once()  # type: ignore[misc]
        self.work_cpu += time.thread_time() - c0
        work = time.perf_counter() - t0 - self.selected
        self.work += work
        self.turns[int(work * 10000)] += 1
        self.sizes[self._ready.popped] += 1

    def _dump(self) -> None:
        with open(self._out + ".tmp", "w") as f:
            json.dump({"lag_ms": self.lags, "turn_tenth_ms": self.turns, "turn_callbacks": self.sizes,
                       "work_s": self.work, "work_cpu_s": self.work_cpu, "slow_callbacks": _SLOW,
                       "codec": _CODEC, "health": _HEALTH, "threads_cpu_s": _threads_cpu()}, f)
        os.replace(self._out + ".tmp", self._out)


class _Policy(asyncio.DefaultEventLoopPolicy):  # type: ignore[misc,valid-type]
    def __init__(self, out: str) -> None:
        super().__init__()
        self._out = out

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _WatchedLoop(self._out)


def main() -> None:
    out, script, *args = sys.argv[1:]
    asyncio.set_event_loop_policy(_Policy(out))
    _time_callbacks()
    _time_codecs()
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
