"""The handler registry: a command name maps to a :class:`Handler` record.

A handler's kind (plain function, coroutine function, sync generator, async
generator) and whether it takes a context are decided once, at registration;
dispatch reads that data and never inspects the function again.

Handler signatures: ``f()``, ``f(args)`` or ``f(args, ctx)``, where ``args`` is
the decoded argument dict and ``ctx`` a :class:`~snakepit_bridge.context.Context`.
A handler may instead declare its parameters (``args: SomeDataclass``, or
keyword-only parameters): :mod:`.params` reads the declaration here, once, and
dispatch binds each call's arguments with the decoder it prepares.

A plain function runs in a worker thread, so it may block. One registered
with ``inline=True`` (kind ``INLINE``) runs on the event loop instead, with no
thread hop and no task: for quick, non-blocking code with a small result
(the built-in ``ping``, ``compute`` and ``info``). While it runs nothing else
in the worker does, and a deadline cannot cut it off.
"""
from __future__ import annotations

import enum
import inspect
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import UnknownCommand
from .params import Params, declare

__all__ = ["Handler", "Kind", "Registry", "command", "default_registry"]


class Kind(enum.Enum):
    FUNCTION = "function"
    INLINE = "inline"  # a plain function run on the event loop
    COROUTINE = "coroutine"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async_generator"

    @property
    def streaming(self) -> bool:
        return self in (Kind.GENERATOR, Kind.ASYNC_GENERATOR)


@dataclass(frozen=True, slots=True)
class Handler:
    name: str
    func: Callable[..., Any]
    kind: Kind
    arity: int  # 0, 1 (args) or 2 (args, ctx); KEYWORDS: declared keyword parameters
    description: str = ""
    #: The declared parameters, or None for an untyped handler (it gets the dict).
    params: Params | None = None

    @property
    def streaming(self) -> bool:
        return self.kind.streaming

    @property
    def takes_ctx(self) -> bool:
        return self.arity == 2 or (self.arity == KEYWORDS and self.params.ctx is not None)  # type: ignore[union-attr]

    def invoke(self, args: dict[str, Any], ctx: Any) -> Any:
        """Call the function; for generators this only creates the generator."""
        if self.arity == 2:
            return self.func(args, ctx)
        if self.arity == 1:
            return self.func(args)
        if self.arity == 0:
            return self.func()
        return self.params.call(self.func, args, ctx)  # type: ignore[union-attr]

    def describe(self) -> dict[str, Any]:
        """``{name, streaming, doc, typed, params_schema}``; the schema is ``{}`` when
        untyped, and says why when a declaration has none (one bad declaration
        must not hide the other commands)."""
        schema: dict[str, Any] = {}
        if self.params is not None:
            try:
                schema = self.params.schema()
            except Exception as exc:  # noqa: BLE001 - e.g. a type msgspec cannot describe
                schema = {"$comment": f"no schema: {type(exc).__name__}: {exc}"}
        return {"name": self.name, "streaming": self.streaming, "doc": self.description,
                "typed": self.params is not None, "params_schema": schema}


#: ``Handler.arity`` of a handler that declares keyword-only parameters.
KEYWORDS = 3


def classify(func: Callable[..., Any]) -> Kind:
    target = inspect.unwrap(func)
    if inspect.isasyncgenfunction(target):
        return Kind.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(target):
        return Kind.GENERATOR
    if inspect.iscoroutinefunction(target):
        return Kind.COROUTINE
    return Kind.FUNCTION


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature
        return None


def _arity(func: Callable[..., Any], sig: inspect.Signature | None) -> int:
    if sig is None:
        return 1
    params = sig.parameters.values()
    positional = [
        p for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    if len(positional) > 2:
        raise TypeError(f"handler {func!r} must take (), (args) or (args, ctx)")
    return len(positional)


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").split("\n\n")[0].split())


_LOADING = threading.RLock()


class Registry:
    """Command name -> :class:`Handler`. Registration is not thread-safe; do it at start-up."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        # name -> what registers it on first use (see defer); never a name in _handlers
        self._deferred: dict[str, Callable[[], Registry]] = {}

    def defer(self, names: Iterable[str], load: Callable[[], "Registry"]) -> None:
        """Promise ``names`` without importing them: the first lookup of any of
        them (or iterating the registry) calls ``load()`` once and takes its
        handlers for the promised names. Listed by :meth:`names` meanwhile. A
        name registered already, or later, keeps that handler."""
        for name in names:
            if name not in self._handlers:
                self._deferred[name] = load

    def _load(self, load: Callable[[], "Registry"]) -> None:
        # A lookup may come from a handler's thread too: one load at a time.
        with _LOADING:
            promised = [n for n, f in self._deferred.items() if f is load]
            if not promised:
                return  # another thread loaded it meanwhile
            loaded = load()
            for name in promised:
                if self._deferred.pop(name, None) is not None and name in loaded._handlers:
                    self._handlers[name] = loaded._handlers[name]

    def _load_all(self) -> None:
        while self._deferred:
            self._load(next(iter(self._deferred.values())))

    def add(
        self,
        name: str,
        func: Callable[..., Any],
        *,
        kind: Kind | None = None,
        description: str | None = None,
        replace: bool = True,
        inline: bool = False,
        extra: str = "forbid",
    ) -> Handler:
        """Register ``func`` under ``name``; ``kind`` overrides classification
        (for callables that return a generator without being generator functions).
        ``inline=True`` runs a plain function on the event loop (see the module
        docstring); any other kind of handler raises ``TypeError``. ``extra``:
        what a typed handler does with undeclared argument keys, ``"forbid"``
        (INVALID_ARGUMENT) or ``"ignore"`` (dropped; see :mod:`.params`)."""
        if not name or not isinstance(name, str):
            raise ValueError("a command name must be a non-empty string")
        if not replace and name in self._handlers:
            raise ValueError(f"command {name!r} is already registered")
        kind = kind or classify(func)
        if inline:
            if kind not in (Kind.FUNCTION, Kind.INLINE):
                raise TypeError(f"only a plain function can be inline; {name!r} is a {kind.value}")
            kind = Kind.INLINE
        doc = description if description is not None else _first_paragraph(inspect.getdoc(func))
        sig = _signature(func)
        params = declare(name, func, sig, extra=extra) if sig is not None else None
        if params is None:
            arity = _arity(func, sig)
        else:  # a record on args is passed even when the parameter has a default
            arity = KEYWORDS if params.keywords else max(_arity(func, sig), 1)
        handler = Handler(name, func, kind, arity, doc, params)
        self._handlers[name] = handler
        self._deferred.pop(name, None)
        return handler

    def command(self, name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@registry.command("name")`` registers and returns the function unchanged."""

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name or func.__name__, func, **options)
            return func

        return register

    def get(self, name: str) -> Handler:
        """The handler for ``name``; raises :class:`UnknownCommand` when there is none."""
        handler = self.find(name)
        if handler is None:
            raise UnknownCommand(name)
        return handler

    def find(self, name: str) -> Handler | None:
        """The handler for ``name``, or None."""
        handler = self._handlers.get(name)
        if handler is None and name in self._deferred:
            self._load(self._deferred[name])
            handler = self._handlers.get(name)
        return handler

    def update(self, other: "Registry") -> None:
        """Take ``other``'s handlers (they win) and its deferred names (unless registered here)."""
        self._handlers.update(other._handlers)
        for name in other._handlers:
            self._deferred.pop(name, None)
        for name, load in other._deferred.items():
            if name not in self._handlers:
                self._deferred[name] = load

    def names(self) -> list[str]:
        return sorted({*self._handlers, *self._deferred})

    def __contains__(self, name: object) -> bool:
        return name in self._handlers or name in self._deferred

    def __iter__(self) -> Iterator[Handler]:
        self._load_all()
        return iter(list(self._handlers.values()))

    def __len__(self) -> int:
        return len(self._handlers) + len(self._deferred)


#: Where ``@command`` registers: user modules imported through ``--adapter`` use it.
default_registry = Registry()
command = default_registry.command
