"""Session state with a size estimate: the ``state`` dict every session holds.

:class:`SessionState` is a dict that re-estimates only the value being stored
(:func:`estimate_size`, a deep ``sys.getsizeof`` walk; numpy arrays count
their ``nbytes``), so the per-session memory cap costs one walk per store,
not a walk of everything per call.
"""
from __future__ import annotations

import sys
import threading
import types
from collections import deque
from collections.abc import Mapping
from typing import Any

from .errors import FailedPrecondition, ResourceExhausted

__all__ = ["MAX_WALK", "SessionState", "StoreTotal", "estimate_size"]

# Containers and objects walked per estimate before giving up (the rest is then
# extrapolated, see estimate_size): a value that reaches half the heap through
# __dict__ must not stall a call.
MAX_WALK = 1_000_000
# Counted by getsizeof alone, in bulk, without identity bookkeeping.
_LEAVES = frozenset((str, bytes, bytearray, int, float, complex, bool, type(None)))
_SEQUENCES = (list, tuple, set, frozenset, deque)
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)


def estimate_size(obj: Any, max_objects: int = MAX_WALK) -> int:
    """A deep ``sys.getsizeof`` estimate of ``obj`` in bytes.

    Containers count their items, plain objects their ``__dict__``; an object
    with an integer ``nbytes`` (numpy array, memoryview) counts its buffer and
    is not walked further. A container or object reached twice counts once.
    After ``max_objects`` the walk stops and what is left is extrapolated
    upwards (see :func:`_extrapolate`), so that a cap holds for values too big
    to walk.
    """
    if type(obj) in _LEAVES:
        return sys.getsizeof(obj)
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack and len(seen) < max_objects:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        try:
            size = sys.getsizeof(o)
        except TypeError:
            size = 64
        if isinstance(o, _OPAQUE):
            total += size  # code and modules are shared, not session data
            continue
        nbytes = getattr(o, "nbytes", None)
        if isinstance(nbytes, int):
            total += max(size, nbytes)  # a numpy view's getsizeof leaves out the data it shows
            continue
        total += size
        if isinstance(o, dict):
            items: Any = [*o.keys(), *o.values()]
        elif isinstance(o, _SEQUENCES):
            items = o
        else:
            attrs = getattr(o, "__dict__", None)
            if isinstance(attrs, dict):
                stack.append(attrs)
            continue
        # Most items of big values are leaves (numbers, strings): sum those in
        # one pass and only stack the rest.
        leaves = [x for x in items if type(x) in _LEAVES]
        total += sum(map(sys.getsizeof, leaves))
        if len(leaves) != len(items):
            stack.extend([x for x in items if type(x) not in _LEAVES])
    if stack:
        total += _extrapolate(stack, -(-total // max(1, len(seen))))
    return total


def _extrapolate(stack: list[Any], avg: int) -> int:
    """What the objects a stopped walk left cost, at least: each its own
    size plus the walk's average object size per item it holds (5M empty
    dicts read as 104 MB where they took 383 MB when this was left out)."""
    rest = 0
    for x in stack:
        try:
            rest += sys.getsizeof(x)
        except TypeError:
            rest += 64
        if isinstance(x, dict):
            rest += 2 * len(x) * avg
        elif isinstance(x, _SEQUENCES):
            rest += len(x) * avg
        else:
            rest += avg  # its __dict__, at least
    return max(rest, len(stack) * avg)


class StoreTotal:
    """Bytes held by all sessions of a store together (and its cap, 0 = none)."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.used += n


class SessionState(dict):
    """A session's ``state``: a dict that keeps ``nbytes`` up to date on every
    mutation and enforces ``max_bytes`` (0 = no cap).

    Mutations are atomic with their bookkeeping (safe from worker threads);
    a mutation that would exceed the cap raises ResourceExhausted and changes
    nothing; after the session ends every mutation raises FailedPrecondition.
    """

    def __init__(self, session_id: str, max_bytes: int = 0, total: StoreTotal | None = None) -> None:
        super().__init__()
        self.session_id = session_id
        #: How errors name this state.
        self.label = f"session {session_id!r}" if session_id else "the worker-global store"
        self.max_bytes = max_bytes
        self.total = total  # what all sessions of the store hold together (--max-sessions-total-mb)
        self._nbytes = 0
        self.closed = False
        self._sizes: dict[Any, int] = {}
        self._mutex = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Estimated bytes of keys and values, plus sizes resources declared."""
        return self._nbytes

    @nbytes.setter
    def nbytes(self, value: int) -> None:
        if self.total is not None and not self.closed:
            self.total.add(value - self._nbytes)
        self._nbytes = value

    def close(self) -> None:
        """The session ended: no more changes; its bytes leave the store's total."""
        with self._mutex:
            if not self.closed and self.total is not None:
                self.total.add(-self._nbytes)
            self.closed = True

    def _writable(self) -> None:
        if self.closed:
            raise FailedPrecondition(f"{self.label} has ended; its state can no longer change")

    def _commit(self, sizes: Mapping[Any, int], extra: int = 0) -> int:
        """New total after replacing the sizes of ``sizes``' keys; raises if the
        cap forbids it. Caller holds the mutex."""
        self._writable()
        old = sum(self._sizes.get(k, 0) for k in sizes)
        new = sum(sizes.values()) + extra
        total = self.nbytes - old + new
        if self.max_bytes and new > old and total > self.max_bytes:
            what = ", ".join(repr(k) for k in sizes) or "a resource"
            raise ResourceExhausted(
                f"storing {what} would grow {self.label} to ~{total} bytes, over its cap of "
                f"{self.max_bytes} bytes (--max-session-mb); delete keys or end the session",
                details={"session_bytes": self.nbytes, "needed_bytes": total, "max_bytes": self.max_bytes},
            )
        store = self.total
        if store is not None and store.limit and new > old and store.used + total - self.nbytes > store.limit:
            what = ", ".join(repr(k) for k in sizes) or "a resource"
            raise ResourceExhausted(
                f"storing {what} in {self.label} would grow all sessions together to "
                f"~{store.used + total - self.nbytes} bytes, over their cap of {store.limit} bytes "
                "(--max-sessions-total-mb); end sessions or delete keys",
                details={"store_bytes": store.used, "max_store_bytes": store.limit},
            )
        return total

    def __setitem__(self, key: Any, value: Any) -> None:
        size = estimate_size(key) + estimate_size(value)  # outside the mutex: it may walk a lot
        with self._mutex:
            self.nbytes = self._commit({key: size})
            dict.__setitem__(self, key, value)
            self._sizes[key] = size

    def update(self, *args: Any, **kwargs: Any) -> None:
        """All or nothing: the cap is checked against every new value at once."""
        items = dict(*args, **kwargs)
        sizes = {k: estimate_size(k) + estimate_size(v) for k, v in items.items()}
        with self._mutex:
            self.nbytes = self._commit(sizes)
            dict.update(self, items)
            self._sizes.update(sizes)

    # `|=` updates in place (and checks the cap) while the inherited `|` builds a plain dict, as
    # with dict itself; mypy calls the pair incompatible because the two return types differ.
    def __ior__(self, other: Any) -> SessionState:  # type: ignore[misc]
        self.update(other)
        return self

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        self[key] = default
        return default

    def __delitem__(self, key: Any) -> None:
        with self._mutex:
            self._writable()
            dict.__delitem__(self, key)
            self.nbytes -= self._sizes.pop(key, 0)

    _MISSING = object()

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        with self._mutex:
            self._writable()
            if key in self:
                self.nbytes -= self._sizes.pop(key, 0)
                return dict.pop(self, key)
        if default is SessionState._MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[Any, Any]:
        with self._mutex:
            self._writable()
            key, value = dict.popitem(self)
            self.nbytes -= self._sizes.pop(key, 0)
            return key, value

    def clear(self) -> None:
        with self._mutex:
            self._writable()
            dict.clear(self)
            extra = self.nbytes - sum(self._sizes.values())  # resources stay charged
            self._sizes.clear()
            self.nbytes = extra

    def remeasure(self, key: Any = _MISSING) -> int:
        """Re-estimate ``key`` (or every key) after in-place mutation; returns
        the session's new ``nbytes``. Raises ResourceExhausted if the value grew
        past the cap (the value stays: delete it or end the session)."""
        keys = list(self) if key is SessionState._MISSING else [key]
        sizes = {k: estimate_size(k) + estimate_size(self[k]) for k in keys if k in self}
        with self._mutex:
            total = self.nbytes - sum(self._sizes.get(k, 0) for k in sizes) + sum(sizes.values())
            self.nbytes = total
            self._sizes.update(sizes)
        if self.max_bytes and total > self.max_bytes:
            raise ResourceExhausted(
                f"{self.label} holds ~{total} bytes, over its cap of {self.max_bytes} bytes "
                "(--max-session-mb)")
        return total

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` held outside the dict (a resource's declared size)."""
        with self._mutex:
            self.nbytes = self._commit({}, nbytes) if nbytes > 0 else self.nbytes + nbytes

    def keys_snapshot(self) -> list[Any]:
        with self._mutex:
            return list(dict.keys(self))
