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


class Context:
    """Request id, deadline, cancellation, logger and session of one call."""

    __slots__ = ("request_id", "command", "deadline", "session", "log", "_cancelled", "dispatcher")

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
        #: A structlog logger bound to the request id and command.
        self.log = log
        self._cancelled = threading.Event()
        #: The dispatcher running this call (worker-level facts: stats, registry, config).
        self.dispatcher = dispatcher

    # -- cancellation and deadline ------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the caller went away, the deadline passed or the worker is
        shutting down. Long-running sync code should check it and return."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (may be negative), or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check(self) -> None:
        """Raise :class:`Cancelled` or :class:`DeadlineExceeded` if the call
        should stop; a cheap call to sprinkle in loops."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded(f"command {self.command!r} exceeded its deadline")
        if self._cancelled.is_set():
            raise Cancelled(f"command {self.command!r} was cancelled")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` in a sync handler, waking early on
        cancellation; returns True if the call was cancelled."""
        return self._cancelled.wait(seconds)

    # -- chunk helpers ----------------------------------------------------------

    @staticmethod
    def progress(done: float, total: float | None = None, message: str | None = None, **fields: Any) -> dict[str, Any]:
        """A progress chunk to yield: ``{"progress": done, "total": total,
        "progress_percent": ..., "message": ...}`` plus ``fields``."""
        chunk: dict[str, Any] = {"progress": done}
        if total is not None:
            chunk["total"] = total
            chunk["progress_percent"] = round(100.0 * done / total, 2) if total else 100.0
        if message is not None:
            chunk["message"] = message
        chunk.update(fields)
        return chunk

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
