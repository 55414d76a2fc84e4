"""The per-call context a handler receives as its second argument.

A handler never learns which transport called it: everything it may need about
the call is here. The context is safe to use from the worker thread a sync
handler runs in.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .chunks import ChunkError, Final
from .errors import Cancelled, DeadlineExceeded, FailedPrecondition

if TYPE_CHECKING:
    from .sessions import Session

__all__ = ["Context"]

_EVENT_LOCK = threading.Lock()


class Context:
    """Request id, deadline, cancellation, logger and session of one call."""

    __slots__ = ("request_id", "command", "deadline", "session", "_log", "_bound", "_cancelled", "_event",
                 "dispatcher", "started", "_last_report")

    def __init__(
        self,
        *,
        request_id: str,
        command: str,
        deadline: float | None,
        session: Session | None,
        log: Any,
        dispatcher: Any = None,
    ) -> None:
        self.request_id = request_id
        self.command = command
        #: ``time.monotonic()`` value after which the call is cut off, or None.
        self.deadline = deadline
        #: The call's session, or None when the call carries no session id.
        self.session = session
        self._log = log
        self._bound: Any = None
        # A flag, and an Event only once a sync handler waits on it: most
        # calls never look, and an Event costs more than the rest of a ping.
        self._cancelled = False
        self._event: threading.Event | None = None
        #: The dispatcher running this call (worker-level facts: stats, registry, config).
        self.dispatcher = dispatcher
        #: ``time.monotonic()`` when the call started (progress reports elapsed time from it).
        self.started = time.monotonic()
        self._last_report: float | None = None

    # -- cancellation and deadline ------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the caller went away, the deadline passed or the worker is
        shutting down. Long-running sync code should check it and return."""
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True  # before reading _event: see wait()
        event = self._event
        if event is not None:
            event.set()

    @property
    def log(self) -> Any:
        """A structlog logger bound to the request id and command."""
        if self._bound is None:
            self._bound = self._log.bind(request_id=self.request_id, command=self.command)
        return self._bound

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (may be negative), or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check(self) -> None:
        """Raise :class:`Cancelled` or :class:`DeadlineExceeded` if the call
        should stop; a cheap call to sprinkle in loops."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded(f"command {self.command!r} exceeded its deadline")
        if self._cancelled:
            raise Cancelled(f"command {self.command!r} was cancelled")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` in a sync handler, waking early on
        cancellation; returns True if the call was cancelled."""
        event = self._event
        if event is None:
            with _EVENT_LOCK:
                if self._event is None:
                    self._event = threading.Event()
                event = self._event
            if self._cancelled:  # cancel() ran before the Event existed
                event.set()
        return event.wait(seconds)

    # -- chunk helpers ----------------------------------------------------------

    def progress(self, done: float, total: float | None = None, message: str | None = None,
                 **fields: Any) -> dict[str, Any]:
        """A progress chunk to yield, so handlers need not build the dict by hand::

            yield ctx.progress(i, n, "parsing", rows=i)

        gives ``{"progress": done, "total": total, "progress_percent": 0..100,
        "elapsed_s": s, "eta_s": s, "message": message, **fields}``.
        ``total``, ``progress_percent`` and ``eta_s`` appear only when ``total``
        is given (``total == 0`` counts as complete); ``eta_s`` only once
        ``done > 0``, extrapolated linearly from the elapsed time. ``fields``
        override the computed keys. Pair it with :meth:`every` to report at a
        steady pace rather than per item.
        """
        elapsed = time.monotonic() - self.started
        chunk: dict[str, Any] = {"progress": done}
        if total is not None:
            chunk["total"] = total
            if total:
                chunk["progress_percent"] = round(100.0 * min(max(done / total, 0.0), 1.0), 2)
                if done > 0:
                    chunk["eta_s"] = round(max(elapsed * (total - done) / done, 0.0), 3)
            else:
                chunk["progress_percent"] = 100.0
                chunk["eta_s"] = 0.0
        chunk["elapsed_s"] = round(elapsed, 3)
        if message is not None:
            chunk["message"] = message
        chunk.update(fields)
        return chunk

    def every(self, seconds: float) -> bool:
        """True on the first call and then at most once per ``seconds``: a cheap
        throttle for progress reports in a tight loop::

            for i, row in enumerate(rows):
                ...
                if ctx.every(0.5):
                    yield ctx.progress(i + 1, len(rows))
        """
        now = time.monotonic()
        if self._last_report is None or now - self._last_report >= seconds:
            self._last_report = now
            return True
        return False

    @staticmethod
    def error(message: str, **data: Any) -> ChunkError:
        """A per-item error to yield; the stream goes on."""
        return ChunkError(message, data)

    @staticmethod
    def final(data: dict[str, Any] | None = None, **fields: Any) -> Final:
        """The last chunk, to yield; the stream ends with it."""
        return Final({**(data or {}), **fields})

    # -- sessions ---------------------------------------------------------------

    def require_session(self) -> Session:
        """The session, or :class:`FailedPrecondition` naming the command."""
        if self.session is None:
            raise FailedPrecondition(
                f"command {self.command!r} needs a session: call ExecuteInSession or pass args['session_id']"
            )
        return self.session
