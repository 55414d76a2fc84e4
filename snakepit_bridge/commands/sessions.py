"""store, retrieve, delete, session_info, end_session, list_sessions.

A call reaches a session through ExecuteInSession(Stream) or ``args["session_id"]``
(what a Snakepit 0.3 GRPCWorker sends); both lead to the same session.

Without a session, ``store`` / ``retrieve`` / ``delete`` use the worker-global
store (``SessionStore.default``): Snakepit 0.3's GenericPythonMsgpack pools call
them that way. It lives as long as the worker, is shared by every call without
a session, is not counted in ``active_sessions`` and is subject to the same
size cap. ``session_info`` and ``end_session`` need a session and fail with
FAILED_PRECONDITION without one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from ..context import Context
from ..errors import FailedPrecondition, NotFound
from ..params import Param
from ..registry import Registry
from ..sessions import Session, SessionStore

registry = Registry()


def _store(ctx: Context) -> SessionStore:
    if ctx.dispatcher is None:
        raise FailedPrecondition(f"command {ctx.command!r} needs a dispatcher with a session store")
    return ctx.dispatcher.sessions


def _target(ctx: Context) -> Session:
    return ctx.session if ctx.session is not None else _store(ctx).default


def _where(ctx: Context) -> str:
    return f"session {ctx.session.id!r}" if ctx.session is not None else "the worker-global store"


_Key = Annotated[str, Param("the key", min_length=1)]


@dataclass(repr=False, eq=False)
class NoArgs:
    """No arguments (a session id, like every reserved key, is tolerated)."""


@registry.command("store", extra="ignore")
def store(ctx: Context, *, key: _Key, value: Annotated[Any, Param("any value")]) -> dict[str, Any]:
    """Keep ``value`` under ``key`` in the session (or the worker-global store).

    Sync on purpose: estimating a large value's size walks it, off the event loop.
    """
    target = _target(ctx)
    target.state[key] = value
    return {"status": "ok", "key": key, "stored": True, "session_id": ctx.session.id if ctx.session else None,
            "size_bytes": target.state.nbytes}


@registry.command("retrieve", extra="ignore")
async def retrieve(ctx: Context, *, key: _Key) -> dict[str, Any]:
    """The value stored under ``key``; NOT_FOUND naming the key if there is none."""
    state = _target(ctx).state
    try:
        value = state[key]
    except KeyError:
        raise NotFound(f"key {key!r} not found in {_where(ctx)}", details={"key": key}) from None
    return {"key": key, "value": value, "session_id": ctx.session.id if ctx.session else None}


@registry.command("delete", extra="ignore")
async def delete(ctx: Context, *, key: _Key) -> dict[str, Any]:
    """Remove ``key``; ``deleted`` says whether it was there (deleting twice is not an error)."""
    state = _target(ctx).state
    deleted = state.pop(key, _ABSENT) is not _ABSENT
    return {"key": key, "deleted": deleted, "session_id": ctx.session.id if ctx.session else None,
            "size_bytes": state.nbytes}


_ABSENT = object()


@registry.command("session_info", extra="ignore")
async def session_info(args: NoArgs, ctx: Context) -> dict[str, Any]:
    """Keys, age, idle time (since the call before this one), estimated size
    in bytes and resource names of the calling session."""
    session = ctx.require_session()
    info = session.describe(calling=True)
    info["keys"] = sorted(map(str, session.state.keys_snapshot()))
    return info


@registry.command("end_session", extra="ignore")
async def end_session(args: NoArgs, ctx: Context) -> dict[str, Any]:
    """End the calling session now, running its close hooks (and waiting for
    them). ``existed`` is False when this call was the session's first use."""
    session = ctx.require_session()
    existed = session.calls > 1
    await _store(ctx).end(session.id)
    return {"session_id": session.id, "existed": existed, "ended": True}


@registry.command("list_sessions", extra="ignore")
async def list_sessions(ctx: Context, *,
                        limit: Annotated[int, Param("at most this many sessions", ge=0)] = 100) -> dict[str, Any]:
    """The worker's sessions, most recently used first (at most ``limit``, default 100)."""
    store = _store(ctx)
    now = time.monotonic()
    sessions = store.sessions()
    sessions.reverse()
    return {
        "count": len(sessions),
        "sessions": [s.describe(now) for s in sessions[:limit]],
        "ttl_s": store.ttl,
        "max_sessions": store.max_sessions,
    }
