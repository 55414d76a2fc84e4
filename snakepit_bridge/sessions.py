"""Session-scoped state owned by the bridge.

A session is created on first use (:meth:`SessionStore.get`) and touched on
every call. It holds ``state`` (a dict with a running size estimate) and
resources that handlers register with a close hook (a loaded model, an open
file). A session ends in one of four ways, and every way runs its close hooks
exactly once, most recently registered first:

* **expiry**: idle for ``ttl`` seconds. A reaper task (started lazily by the
  first ``get`` that runs inside an event loop) sleeps until the earliest
  expiry time; it never polls.
* **eviction**: creating a session beyond ``max_sessions`` evicts the least
  recently used one.
* **explicit end**: :meth:`SessionStore.end` (the ``end_session`` command).
* **shutdown**: :meth:`SessionStore.close_all` (the dispatcher's ``aclose``).

Close hooks never run on the event loop: sync hooks run on reusable daemon
threads, at most ``HOOK_THREADS`` at once (not ``asyncio.to_thread``, so that a
hook that hangs cannot keep the process from exiting), async hooks are awaited. A hook that raises is logged with its
traceback and the others still run; one that overruns ``hook_timeout`` is
logged and abandoned.

Locking (``Config.session_lock``, on by default, ``--no-session-lock`` turns
it off): the dispatcher holds :attr:`Session.lock` for each unary call in a
session, so calls within one session run one at a time, in arrival order, and
a handler may read-modify-write ``state`` safely; calls in different sessions
run concurrently. Streams do not take the lock (one would block its session
for as long as it is open), so a stream and unary calls in one session may
interleave.

Busy sessions: a session with a call in flight (:attr:`Session.busy`: its lock
is held, or a call is counted by :meth:`Session.call_scope`) is neither expired
nor evicted. At its expiry time it is touched instead (a running call is use);
eviction takes the least recently used *idle* session, and when every session
is busy a new one is refused with ResourceExhausted. The dispatcher runs
unary calls in :meth:`Session.call_scope` and brackets streams with
``begin_call`` / ``end_call``, so idle time counts from the end of the last
call. Only ``end_session`` ends a session under a call still in flight (for
example a stream): that call's later writes fail with FailedPrecondition.
A unary call cut off at its deadline (or by its caller leaving) whose handler
keeps running, as a sync handler that ignores ``ctx.cancelled`` does, stays in
flight and keeps the lock until the handler actually returns: the session's
next call waits for it (within its own deadline) instead of racing it.

Memory estimate: ``state`` re-estimates only the value being stored (a deep
``sys.getsizeof`` walk; objects with an integer ``nbytes``, e.g. numpy arrays,
count their buffer), so a call costs what it stores, not what the session
holds. In-place mutation (``state["xs"].append(...)``) is not seen until
``state.remeasure(key)``. With a cap (``max_bytes``), a store that would push
the session over it raises ResourceExhausted and leaves the state unchanged.
Resources count only the ``size=`` their handler declares.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import inspect
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._hooks import HOOK_THREADS, Hook, run_hook, run_hooks_sync
from ._lazy import lazy_module
from ._session_state import SessionState, StoreTotal, estimate_size
from .errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, ShuttingDown
from .logging import get_logger

if TYPE_CHECKING:
    import asyncio

    from .config import Config
else:
    asyncio = lazy_module("asyncio")  # imported on first use: the stdio front end needs no loop (see _lazy.py)

__all__ = ["CallScope", "Session", "SessionState", "SessionStore", "estimate_size", "session_name"]


def session_name(value: Any) -> str:
    """The session an ``args["session_id"]`` value names (``""``: none).

    A string names itself. A number, boolean or null names the session
    spelled by its JSON text (``1.5`` -> ``"1.5"``, ``True`` -> ``"true"``,
    ``None`` -> ``"null"``): Snakepit 0.3's Elixir client sends a string
    session id raw, so ``"1.5"`` arrives as the number 1.5, and it must not
    mean "no session" (the worker-global store). The gRPC transport passes
    such ids on as their raw text (``"1e3"`` stays ``"1e3"``); this is the
    rule for ids that come already decoded (stdio frames, ``arg_encodings``
    json). Anything else is an :class:`~snakepit_bridge.errors.InvalidArgument`."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        from .codecs.values import dumps_json

        return dumps_json(value).decode()
    raise InvalidArgument(f"session_id must be a string (or a number, boolean or null, named by its JSON text), "
                          f"not {type(value).__name__}")


class Session:
    """One session's state, resources, hooks and call lock."""

    def __init__(self, session_id: str, *, max_bytes: int = 0, store: SessionStore | None = None,
                 total: StoreTotal | None = None) -> None:
        self.id = session_id
        self.state = SessionState(session_id, max_bytes, total if total is not None else getattr(store, "total", None))
        self.created = time.monotonic()
        self.last_used = self.created
        #: When the session was used before its latest use (for "idle time").
        self.previous_use = self.created
        #: Calls that reached this session (``SessionStore.get`` counts them).
        self.calls = 0
        self._lock: asyncio.Lock | None = None  # made on first use (see lock)
        self.closed = False
        self._active = 0
        self._resources: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self._hooks: list[tuple[str, Hook]] = []
        self._guard = threading.Lock()
        self._store = store

    # -- use -------------------------------------------------------------------------

    @property
    def lock(self) -> asyncio.Lock:
        """Serializes unary calls within the session (``Config.session_lock``):
        calls in one session run one at a time, different sessions concurrently.
        Made on first use: the worker-global store exists from the start, and
        a stdio worker starts without asyncio (see _lazy.py)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    @property
    def busy(self) -> bool:
        """True while a call is in flight: such a session is not expired or evicted."""
        return self._active > 0 or (self._lock is not None and self._lock.locked())

    @property
    def nbytes(self) -> int:
        return self.state.nbytes

    def touch(self) -> None:
        """Mark the session used now. Call on the event loop (it reorders the store)."""
        now = time.monotonic()
        self.previous_use, self.last_used = self.last_used, now
        if self._store is not None:
            self._store._touched(self)

    def begin_call(self) -> None:
        self._active += 1

    def end_call(self) -> None:
        self._active -= 1
        self.touch()  # idle time counts from the end of the last call

    @contextlib.asynccontextmanager
    async def call_scope(self, lock: bool = True) -> AsyncIterator[CallScope]:
        """What a dispatcher wraps a call in: counts it in flight (so the
        session is not expired or evicted under it), holds ``lock`` if asked,
        and touches the session when the call ends; or, if the call left work
        running (:meth:`CallScope.outlive`), when that work finishes."""
        self.begin_call()
        scope = CallScope(self)
        locked = False
        try:
            if lock:
                await self.lock.acquire()
                locked = True
            yield scope
        finally:
            if scope.until is not None and not scope.until.done():
                # An abandoned handler still runs in this session: releasing
                # now would let the next call interleave with it (lost updates).
                scope.until.add_done_callback(lambda _: self._end_scope(locked))
            else:
                self._end_scope(locked)

    def _end_scope(self, locked: bool) -> None:
        if locked:
            self.lock.release()
        self.end_call()

    # -- resources and hooks -----------------------------------------------------------

    def add_resource(self, name: str, resource: Any, close: Callable[[Any], Any] | None = None,
                     *, size: int = 0) -> Any:
        """Keep ``resource`` for the session's lifetime; returns it.

        When the session ends, ``close(resource)`` is called (or
        ``resource.close()`` if it has one) exactly once. ``size`` (bytes) is
        counted against the session's cap; resources are not walked. Raises
        FailedPrecondition if the name is taken or the session has ended.
        """
        with self._guard:
            if self.closed:
                raise FailedPrecondition(f"session {self.id!r} has ended; cannot add resource {name!r}")
            if name in self._resources:
                raise FailedPrecondition(f"session {self.id!r} already has a resource named {name!r}")
            if size:
                self.state.charge(size)
            self._resources[name] = resource
            self._sizes[name] = size
            closer: Hook | None = functools.partial(close, resource) if close else getattr(resource, "close", None)
            if callable(closer):
                self._hooks.append((name, closer))
        return resource

    def resource(self, name: str) -> Any:
        """The resource ``name``; NotFound if there is none."""
        try:
            return self._resources[name]
        except KeyError:
            raise NotFound(f"session {self.id!r} has no resource named {name!r}") from None

    @property
    def resources(self) -> Mapping[str, Any]:
        """Read-only view of the session's resources by name."""
        return MappingProxyType(self._resources)

    def remove_resource(self, name: str) -> Any:
        """Forget ``name`` without closing it (the caller owns it now); returns it."""
        with self._guard:
            resource = self.resource(name)
            del self._resources[name]
            self.state.charge(-self._sizes.pop(name, 0))
            self._hooks = [(n, h) for n, h in self._hooks if n != name]
            return resource

    def on_close(self, hook: Hook, name: str | None = None) -> None:
        """Call ``hook()`` (sync or async) once when the session ends."""
        with self._guard:
            if self.closed:
                raise FailedPrecondition(f"session {self.id!r} has ended; cannot add a close hook")
            self._hooks.append((name or str(getattr(hook, "__qualname__", "hook")), hook))

    def take_hooks(self) -> list[tuple[str, Hook]]:
        """Mark the session ended and hand over its hooks, newest first. Only
        the first call gets them: this is what makes hooks run exactly once."""
        with self._guard:
            hooks, self._hooks = self._hooks, []
            self.closed = True
        self.state.close()
        hooks.reverse()
        return hooks

    def describe(self, now: float | None = None, *, calling: bool = False) -> dict[str, Any]:
        """Facts for ``session_info`` / ``list_sessions``. ``calling``: the
        caller is in this session, so idle time runs from the use before its call."""
        now = time.monotonic() if now is None else now
        return {
            "session_id": self.id,
            "age_s": round(now - self.created, 3),
            "idle_s": round(now - (self.previous_use if calling else self.last_used), 3),
            "size_bytes": self.state.nbytes,
            "max_bytes": self.state.max_bytes,
            "key_count": len(self.state),
            "resources": sorted(self._resources),
            "calls": self.calls,
        }


class CallScope:
    """One call's hold on its session, yielded by :meth:`Session.call_scope`."""

    __slots__ = ("session", "until")

    def __init__(self, session: Session) -> None:
        self.session = session
        #: Work that outlives the call; the hold lasts until it is done.
        self.until: asyncio.Future[Any] | None = None

    def outlive(self, work: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> None:
        """Keep the session's lock and in-flight count past the call, until
        ``work`` (a task, or a worker thread's future) finishes. Call on the
        event loop; the release happens there too."""
        self.until = asyncio.wrap_future(work)  # a thread's future: done callbacks come to the loop


class SessionStore:
    """All sessions of one worker, least recently used first, plus ``default``:
    the worker-global store that commands use for calls without a session
    (never expired, not counted in ``len()``, closed at shutdown)."""

    def __init__(self, *, ttl: float = 3600.0, max_sessions: int = 10_000, max_bytes: int = 0,
                 hook_timeout: float = 10.0, max_total_bytes: int = 0) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.hook_timeout = hook_timeout
        #: Bytes held by every session and the worker-global store together (cap 0 = none).
        self.total = StoreTotal(max_total_bytes)
        self.default = Session("", max_bytes=max_bytes, total=self.total)
        self.closed = False
        #: How sessions ended, for tests and logs.
        self.counts = {"created": 0, "expired": 0, "evicted": 0, "ended": 0, "shutdown": 0}
        #: How often the reaper woke (it should wake about once per expiry).
        self.reaper_wakeups = 0
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._reaper: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closing: set[asyncio.Task[Any]] = set()  # strong refs to hook runs in flight
        self._hook_threads: asyncio.Semaphore | None = None  # made on first use (asyncio may not be loaded yet)
        self.log = get_logger("snakepit_bridge.sessions")

    @classmethod
    def from_config(cls, config: Config) -> SessionStore:
        return cls(ttl=config.session_ttl, max_sessions=config.max_sessions, max_bytes=config.max_session_bytes,
                   max_total_bytes=config.max_sessions_total_bytes)

    # -- lookup ----------------------------------------------------------------------

    def get(self, session_id: str) -> Session:
        """The session ``session_id``, created on first use, touched and counted.

        Raises ResourceExhausted when a new session is needed, the store is
        full and every session has a call in flight; ShuttingDown after
        :meth:`close_all`.
        """
        if self.closed:
            raise ShuttingDown()
        session = self._sessions.get(session_id)
        if session is None:
            self._make_room()
            session = Session(session_id, max_bytes=self.max_bytes, store=self)
            self._sessions[session_id] = session
            self.counts["created"] += 1
            self.log.debug("session created", session_id=session_id, sessions=len(self._sessions))
            self._start_reaper()
        else:
            session.touch()
        session.calls += 1
        return session

    def peek(self, session_id: str) -> Session | None:
        """The session if it exists; neither creates nor touches."""
        return self._sessions.get(session_id)

    def sessions(self) -> list[Session]:
        """Every session, least recently used first."""
        return list(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def _touched(self, session: Session) -> None:
        # Keeping the dict in use order makes both the LRU victim and the next
        # expiry the first entry.
        if self._sessions.get(session.id) is session:
            self._sessions.move_to_end(session.id)

    # -- ending sessions -----------------------------------------------------------------

    async def end(self, session_id: str) -> bool:
        """End a session and wait for its close hooks; False if there was none."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        await self._close(session, "ended")
        return True

    async def close_all(self) -> None:
        """Shutdown: stop the reaper, end every session and the worker-global
        store (hooks of all sessions run concurrently), and wait for hook runs
        still in flight. Later ``get`` calls raise ShuttingDown. Idempotent."""
        self.closed = True
        reaper, self._reaper = self._reaper, None
        if reaper is not None and not reaper.done():
            reaper.cancel()
            if reaper.get_loop() is asyncio.get_running_loop():
                await asyncio.wait({reaper})  # not `await reaper`: our own cancellation must propagate
        sessions = list(self._sessions.values())
        self._sessions.clear()
        closes = [self._close(s, "shutdown") for s in sessions]
        closes.append(self._close(self.default, "shutdown"))
        started = time.monotonic()
        outcomes = await asyncio.gather(*closes, *list(self._closing), return_exceptions=True)
        ran = [o for o in outcomes[:len(closes)] if isinstance(o, tuple)]
        # One line for the lot: a line per session could be thousands at exit.
        self.log.info("sessions closed at shutdown", sessions=len(sessions), hooks=sum(h for h, _ in ran),
                      failed_hooks=sum(f for _, f in ran), duration_ms=round((time.monotonic() - started) * 1000, 1))

    def reap(self, now: float | None = None) -> int:
        """Expire every idle session whose ttl has passed (busy ones are touched
        instead); returns how many expired. The reaper calls this; tests may."""
        now = time.monotonic() if now is None else now
        expired = 0
        while self._sessions:
            session = next(iter(self._sessions.values()))
            if session.last_used + self.ttl > now:
                break
            if session.busy:
                session.touch()  # a call in flight is use; look again one ttl later
                continue
            del self._sessions[session.id]
            self._close_soon(session, "expired")
            expired += 1
        return expired

    def _make_room(self) -> None:
        while len(self._sessions) >= self.max_sessions:
            victim = next((s for s in self._sessions.values() if not s.busy), None)
            if victim is None:
                raise ResourceExhausted(
                    f"cannot open a new session: all {len(self._sessions)} sessions (--max-sessions) "
                    "have calls in flight")
            del self._sessions[victim.id]
            self._close_soon(victim, "evicted")

    def _close_soon(self, session: Session, reason: str) -> None:
        """Close without waiting (from sync code): hooks run in a task."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No event loop (plain sync use): run the hooks here and now.
            self._finish(session, reason, run_hooks_sync(session.take_hooks(), self._hook_failed, session.id))
            return
        task = loop.create_task(self._close(session, reason), name=f"session-close-{session.id}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, session: Session, reason: str) -> tuple[int, int]:
        """Run the session's hooks; ``(hooks run, hooks failed)``."""
        hooks = session.take_hooks()  # marks it ended even when it has no hooks
        failed = 0
        for name, hook in hooks:
            try:
                if inspect.iscoroutinefunction(hook):
                    await asyncio.wait_for(hook(), self.hook_timeout)
                    continue
                if self._hook_threads is None:
                    self._hook_threads = asyncio.Semaphore(HOOK_THREADS)
                async with self._hook_threads:  # shutdown closes all sessions at once: bound the threads
                    result = await asyncio.wait_for(run_hook(hook), self.hook_timeout)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, self.hook_timeout)
            except TimeoutError:
                failed += 1
                self.log.error("session close hook did not finish in time; abandoned", session_id=session.id,
                               hook=name, timeout_s=self.hook_timeout)
            except Exception as exc:  # noqa: BLE001 - one bad hook must not stop the others
                failed += 1
                self._hook_failed(session.id, name, exc)
        self._finish(session, reason, (len(hooks), failed))
        return len(hooks), failed

    def _finish(self, session: Session, reason: str, outcome: tuple[int, int]) -> None:
        if session.id:  # the worker-global store is not a session
            self.counts[reason] += 1
        hooks, failed = outcome
        log = self.log.debug if reason == "shutdown" else self.log.info  # shutdown logs a summary
        log("session closed", session_id=session.id or "<worker-global>", reason=reason,
                      hooks=hooks, failed_hooks=failed, size_bytes=session.state.nbytes,
                      age_s=round(time.monotonic() - session.created, 3))

    def _hook_failed(self, session_id: str, name: str, exc: BaseException) -> None:
        self.log.error("session close hook failed", session_id=session_id, hook=name,
                       error=f"{type(exc).__name__}: {exc}", traceback="".join(traceback.format_exception(exc)))

    # -- the reaper ------------------------------------------------------------------------

    def _start_reaper(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: expiry happens when someone calls reap()
        if self._reaper is not None and not self._reaper.done() and self._reaper.get_loop() is loop:
            if self._wake is not None:
                self._wake.set()  # it may be waiting for a first session
            return
        self._wake = asyncio.Event()
        self._reaper = loop.create_task(self._reap_forever(), name="session-reaper")
        self._reaper.add_done_callback(self._reaper_done)

    async def _reap_forever(self) -> None:
        assert self._wake is not None
        while not self.closed:
            self._wake.clear()
            if not self._sessions:
                await self._wake.wait()  # nothing can expire until a session exists
                continue
            # The first entry is the least recently used: the earliest expiry.
            # Touches only move expiries later, so sleeping until then is enough.
            first = next(iter(self._sessions.values()))
            delay = first.last_used + self.ttl - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                self.reaper_wakeups += 1
                continue
            self.reap()

    def _reaper_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("session reaper crashed; idle sessions will not expire", error=repr(exc),
                           traceback="".join(traceback.format_exception(exc)))
