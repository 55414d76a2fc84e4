"""In-process unit tests of the session store: size estimate, cap, hooks,
eviction, the reaper, busy sessions, and the dispatcher's use of sessions."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
import pytest

from snakepit_bridge.commands import builtin_registry
from snakepit_bridge.config import Config
from snakepit_bridge.dispatch import Dispatcher, Request
from snakepit_bridge.errors import FailedPrecondition, NotFound, ResourceExhausted, ShuttingDown
from snakepit_bridge.registry import Registry
from snakepit_bridge.sessions import Session, SessionState, SessionStore, estimate_size


class Recorder:
    """Stands in for a structlog logger and keeps what was logged."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def __getattr__(self, level):
        return lambda event, **kw: self.events.append((level, event, kw))

    def errors(self) -> list[tuple[str, dict]]:
        return [(e, kw) for level, e, kw in self.events if level == "error"]


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for a condition"
        await asyncio.sleep(0.01)


# -- estimate and cap ------------------------------------------------------------------------


def test_estimate_counts_numpy_buffers_nested_values_and_views():
    arr = np.zeros(100_000)
    assert estimate_size(arr) >= 800_000
    assert estimate_size(arr[::2]) >= 400_000  # a view: getsizeof alone leaves the data out
    nested = {"a": [arr, {"b": "x" * 10_000}]}
    assert estimate_size(nested) >= 810_000
    assert estimate_size([arr, arr]) < 2 * 800_000  # shared objects count once
    cyclic: list = []
    cyclic.append(cyclic)
    assert estimate_size(cyclic) > 0

    class Obj:
        def __init__(self):
            self.payload = b"y" * 50_000

    assert estimate_size(Obj()) >= 50_000

    class Model:
        def __init__(self):
            self.lib, self.fn, self.weights = np, print, np.ones(1_000)

    assert 8_000 <= estimate_size(Model()) < 20_000  # numpy the module is not session data


def test_state_tracks_size_incrementally_and_enforces_the_cap():
    state = SessionState("s", max_bytes=100_000)
    state["a"] = b"x" * 40_000
    after_a = state.nbytes
    assert 40_000 <= after_a < 41_000
    with pytest.raises(ResourceExhausted, match="'b'.*cap of 100000"):
        state["b"] = b"x" * 70_000
    assert "b" not in state and state.nbytes == after_a  # nothing changed
    with pytest.raises(ResourceExhausted):
        state.update(c=b"1" * 30_000, d=b"2" * 40_000)  # all or nothing
    assert "c" not in state and state.nbytes == after_a
    state.update(c=b"1" * 30_000)
    state["a"] = b"small"  # shrinking is always allowed
    assert state.nbytes < 31_000
    del state["a"]
    assert state.pop("c") == b"1" * 30_000
    assert state.pop("missing", None) is None
    assert state.nbytes == 0
    state.setdefault("xs", []).extend(range(20_000))  # in place: not seen ...
    assert state.nbytes < 1_000
    with pytest.raises(ResourceExhausted):
        state.remeasure("xs")  # ... until remeasured
    assert state.nbytes > 100_000
    state.clear()
    assert state.nbytes == 0


def test_unbounded_state_is_consistent_under_threads():
    state = SessionState("s")

    def work(t):
        for i in range(500):
            state[f"{t}-{i % 50}"] = "v" * (i % 7)
            state.pop(f"{t}-{(i + 25) % 50}", None)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.nbytes == sum(estimate_size(k) + estimate_size(v) for k, v in state.items())


# -- sessions and hooks ---------------------------------------------------------------------------


def test_resources_names_sizes_and_removal():
    s = Session("s", max_bytes=10_000)
    closed = []
    s.add_resource("f", object(), close=lambda r: closed.append("f"), size=4_000)
    with pytest.raises(FailedPrecondition, match="already has a resource named 'f'"):
        s.add_resource("f", object())
    with pytest.raises(ResourceExhausted):
        s.add_resource("g", object(), size=7_000)
    assert "g" not in s.resources and s.nbytes == 4_000
    with pytest.raises(NotFound):
        s.resource("g")
    taken = s.add_resource("plain", 42)  # nothing to close: held only
    assert taken == 42 and s.resource("plain") == 42
    s.remove_resource("f")
    assert s.nbytes == 0 and s.take_hooks() == [] and closed == []


async def test_hooks_run_once_newest_first_and_a_failure_does_not_stop_the_others():
    store = SessionStore()
    store.log = Recorder()
    ran: list[str] = []
    s = store.get("a")

    class File:
        def close(self):
            ran.append("file")

    async def async_hook():
        ran.append("async")

    def bad():
        ran.append("bad")
        raise RuntimeError("hook broke")

    s.add_resource("file", File())
    s.on_close(bad, name="bad")
    s.on_close(async_hook)
    s.add_resource("model", "m", close=lambda m: ran.append(f"model:{m}"))
    assert await store.end("a") is True
    assert ran == ["model:m", "async", "bad", "file"]
    assert await store.end("a") is False
    await store.close_all()
    assert ran == ["model:m", "async", "bad", "file"]  # exactly once
    (event, fields), = store.log.errors()
    assert event == "session close hook failed" and "hook broke" in fields["error"] and fields["hook"] == "bad"
    with pytest.raises(FailedPrecondition, match="has ended"):
        s.state["x"] = 1
    with pytest.raises(FailedPrecondition, match="has ended"):
        s.add_resource("late", object())


async def test_blocking_hooks_run_off_the_event_loop_and_overruns_are_abandoned():
    store = SessionStore(hook_timeout=0.5)
    store.log = Recorder()
    release = threading.Event()
    store.get("a").on_close(lambda: release.wait(5), name="waits_for_loop")
    store.get("b").on_close(lambda: time.sleep(30), name="hangs")

    async def free_it():  # only runs if the hook is not blocking the loop
        await asyncio.sleep(0.05)
        release.set()

    helper = asyncio.create_task(free_it())
    started = time.monotonic()
    await store.end("a")
    await helper
    assert release.is_set() and time.monotonic() - started < 4
    started = time.monotonic()
    await store.close_all()
    assert time.monotonic() - started < 3  # the hung hook did not hold shutdown
    assert any(e == "session close hook did not finish in time; abandoned" for e, _ in store.log.errors())


def test_eviction_without_a_loop_runs_hooks_inline():
    store = SessionStore(max_sessions=2)
    ran = []
    store.get("a").on_close(lambda: ran.append("a"))
    store.get("b")
    store.get("a")  # b is now least recently used
    store.get("c")
    assert "b" not in store and "a" in store and "c" in store and ran == []
    store.get("d")
    assert ran == ["a"] and store.counts["evicted"] == 2 and len(store) == 2


async def test_eviction_skips_busy_sessions_and_refuses_when_all_are_busy():
    store = SessionStore(max_sessions=2)
    a, b = store.get("a"), store.get("b")
    await a.lock.acquire()  # a call in flight in a (a is least recently used)
    store.get("c")
    assert "a" in store and "b" not in store
    async with store.peek("c").call_scope(lock=False):
        with pytest.raises(ResourceExhausted, match="have calls in flight"):
            store.get("d")
    a.lock.release()
    store.get("d")
    assert "a" not in store and "c" in store
    await store.close_all()
    assert b.closed and a.closed


# -- expiry ---------------------------------------------------------------------------------------


async def test_reaper_expires_idle_sessions_and_sleeps_between_expiries():
    store = SessionStore(ttl=0.2)
    ran = []
    store.get("a").on_close(lambda: ran.append("a"))
    store.get("b").on_close(lambda: ran.append("b"))
    await until(lambda: store.counts["expired"] == 2)
    assert sorted(ran) == ["a", "b"] and len(store) == 0
    # One sleep per expiry time, not a poll: waking a handful of times is plenty.
    assert store.reaper_wakeups <= 3
    store.get("c")  # the reaper was waiting for a session: it wakes for this one
    await until(lambda: "c" not in store)
    await store.close_all()
    assert store._reaper is None


async def test_reaper_does_not_poll_while_nothing_is_due():
    store = SessionStore(ttl=60)
    store.get("a")
    await asyncio.sleep(0.3)
    assert store.reaper_wakeups == 0 and "a" in store
    await store.close_all()


async def test_a_session_with_a_call_in_flight_does_not_expire():
    store = SessionStore(ttl=0.1)
    ran = []
    busy = store.get("busy")
    busy.on_close(lambda: ran.append("busy"))
    store.get("idle").on_close(lambda: ran.append("idle"))
    async with busy.call_scope(lock=True):
        await until(lambda: "idle" in ran)
        await asyncio.sleep(0.3)  # three ttls with the call in flight
        assert "busy" in store and not busy.closed
    # Idle time counts from the end of the call.
    await until(lambda: "busy" in ran)
    await store.close_all()
    assert ran == ["idle", "busy"]


@pytest.mark.parametrize("lock", [True, False])
async def test_work_that_outlives_its_call_keeps_the_session_held(lock):
    """Work abandoned at its deadline (here a worker thread's future) keeps the
    lock and the in-flight count until it finishes; the release comes on the loop."""
    store = SessionStore()
    s = store.get("s")
    work: concurrent.futures.Future[None] = concurrent.futures.Future()
    async with s.call_scope(lock=lock) as call:
        assert call.session is s
        call.outlive(work)
    assert s.busy and s.lock.locked() is lock
    waiter = asyncio.ensure_future(s.lock.acquire())
    await asyncio.sleep(0.02)
    assert waiter.done() is not lock  # the next call waits for the abandoned work
    threading.Thread(target=work.set_result, args=(None,)).start()
    await until(lambda: waiter.done())
    s.lock.release()
    await until(lambda: not s.busy)
    async with s.call_scope() as call:  # finished work: released at once, as before
        call.outlive(asyncio.get_running_loop().create_future())
        call.until.set_result(None)
    assert not s.busy
    await store.close_all()


async def test_closed_store_refuses_new_sessions():
    store = SessionStore()
    store.get("a")
    await store.close_all()
    await store.close_all()  # idempotent
    with pytest.raises(ShuttingDown):
        store.get("b")


# -- through the dispatcher -------------------------------------------------------------------------


def _dispatcher(**config) -> Dispatcher:
    registry = builtin_registry(("basic", "sessions"))
    extra = Registry()

    @extra.command("whoami")
    def whoami(args, ctx):
        return {"session": ctx.session.id if ctx.session else None}

    @extra.command("incr")
    async def incr(args, ctx):
        n = ctx.session.state.get("n", 0)
        await asyncio.sleep(0.001)
        ctx.session.state["n"] = n + 1
        return {"n": n + 1}

    registry.update(extra)
    return Dispatcher(registry, Config(**config))


async def test_dispatcher_routes_and_serializes_calls_within_a_session():
    d = _dispatcher()
    assert (await d.call(Request("whoami", {}))).result == {"session": None}
    assert (await d.call(Request("whoami", {}, session_id="x"))).result == {"session": "x"}
    assert (await d.call(Request("whoami", {"session_id": "x"}))).result == {"session": "x"}
    assert len(d.sessions) == 1 and d.sessions.peek("x").calls == 2
    results = await asyncio.gather(*(d.call(Request("incr", {}, session_id=f"s{i % 5}")) for i in range(100)))
    assert all(r.success for r in results)
    for i in range(5):
        assert d.sessions.peek(f"s{i}").state["n"] == 20
    await d.aclose()
    with pytest.raises(ShuttingDown):
        d.sessions.get("late")


async def test_worker_global_store_is_not_a_session():
    d = _dispatcher(max_session_bytes=51_200)
    assert (await d.call(Request("store", {"key": "k", "value": "v"}))).success
    assert (await d.call(Request("retrieve", {"key": "k"}))).result["value"] == "v"
    assert len(d.sessions) == 0 and d.sessions.default.state["k"] == "v"
    big = await d.call(Request("store", {"key": "big", "value": "x" * 60_000}))
    assert not big.success and big.code == "RESOURCE_EXHAUSTED"
    assert "the worker-global store" in big.error and "cap of 51200" in big.error
    missing = await d.call(Request("retrieve", {"key": "nope"}))
    assert missing.code == "NOT_FOUND" and "worker-global store" in missing.error
    await d.aclose()


async def test_worker_global_store_hooks_run_at_shutdown_and_idle_time_is_reported():
    store = SessionStore()
    ran = []
    store.default.add_resource("cache", object(), close=lambda _: ran.append("cache"))
    s = store.get("a")
    first_use = s.last_used
    store.get("a")
    mine = s.describe(calling=True)  # as session_info sees its own session
    theirs = s.describe()  # as list_sessions sees another one
    assert mine["idle_s"] >= theirs["idle_s"] >= 0 and s.previous_use == first_use and mine["calls"] == 2
    await store.close_all()
    assert ran == ["cache"] and store.default.closed and store.counts["shutdown"] == 1


async def test_hook_threads_are_reused_and_a_hung_hook_does_not_starve_the_rest():
    store = SessionStore(hook_timeout=0.3)
    store.log = Recorder()
    stuck = threading.Event()
    store.get("hung").on_close(lambda: stuck.wait(10))
    ran = []
    for i in range(200):
        store.get(f"s{i}").on_close(lambda i=i: ran.append(i))
    before = threading.active_count()
    started = time.monotonic()
    await store.close_all()
    assert sorted(ran) == list(range(200)) and time.monotonic() - started < 5
    # 201 hooks ran on at most HOOK_THREADS (+ the hung one) threads, not one each.
    assert threading.active_count() - before <= 20
    stuck.set()
