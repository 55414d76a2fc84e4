"""Session-scoped state owned by the bridge.

A session is created on first use and touched on every call. It holds a
``state`` dict and resources registered with a close hook; every way a session
ends runs those hooks exactly once.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .logging import get_logger

if TYPE_CHECKING:
    from .config import Config

__all__ = ["Session", "SessionStore"]


class Session:
    """One session's state, resources and call lock."""

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.state: dict[str, Any] = {}
        self.created = time.monotonic()
        self.last_used = self.created
        #: Serializes unary calls within the session (see ``Config.session_lock``).
        self.lock = asyncio.Lock()
        self._hooks: list[tuple[str, Callable[[], Any]]] = []
        self.closed = False

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def add_resource(self, name: str, resource: Any, close: Callable[[Any], Any] | None = None) -> Any:
        """Keep ``resource`` in ``state[name]`` and call ``close(resource)`` (or
        ``resource.close()``) once when the session ends. Returns the resource."""
        self.state[name] = resource
        closer = close or getattr(resource, "close", None)
        if closer is not None:
            self._hooks.append((name, (lambda: closer(resource)) if close else closer))
        return resource

    def on_close(self, hook: Callable[[], Any]) -> None:
        """Call ``hook()`` once when the session ends."""
        self._hooks.append(("<hook>", hook))

    def take_hooks(self) -> list[tuple[str, Callable[[], Any]]]:
        hooks, self._hooks = self._hooks, []
        self.closed = True
        return hooks


class SessionStore:
    """All sessions of one worker, least recently used first."""

    def __init__(self, *, ttl: float = 3600.0, max_sessions: int = 10_000) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.log = get_logger("snakepit_bridge.sessions")

    @classmethod
    def from_config(cls, config: Config) -> SessionStore:
        return cls(ttl=config.session_ttl, max_sessions=config.max_sessions)

    def get(self, session_id: str) -> Session:
        """The session ``session_id``, created on first use and touched."""
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = Session(session_id)
        else:
            self._sessions.move_to_end(session_id)
        session.touch()
        return session

    def peek(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def end(self, session_id: str) -> bool:
        """End a session, running its close hooks; False if there was none."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        await self._close(session, "ended")
        return True

    async def close_all(self) -> None:
        while self._sessions:
            _, session = self._sessions.popitem(last=False)
            await self._close(session, "shutdown")

    async def _close(self, session: Session, reason: str) -> None:
        for name, hook in session.take_hooks():
            try:
                result = await asyncio.to_thread(hook)
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - one bad hook must not stop the others
                self.log.error("session close hook failed", session_id=session.id, resource=name, error=repr(exc))
        self.log.info("session closed", session_id=session.id, reason=reason)

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions
