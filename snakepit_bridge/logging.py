"""Structured logging with structlog, always to stderr.

stdout is the protocol channel in stdio mode and the ready channel in gRPC
mode, so nothing here may ever touch it. Records from the standard library's
``logging`` (grpc's Python layer, asyncio, third-party libraries a handler
uses) are rendered by the same renderer, so ``--log-format json`` yields one
JSON object per stderr line whatever logged it. gRPC's C core logs to stderr
by itself (``GRPC_VERBOSITY`` / ``GRPC_TRACE`` control it).

Levels: ``info`` gives one line per call (emitted by the dispatcher) plus
lifecycle lines; per-chunk lines are ``debug`` only.

structlog is imported and set up when the first line that needs it is
logged, not at start-up: :func:`configure` only records the level and format,
and :func:`get_logger` hands out a stand-in that renders lines of plain values
itself (structlog's layout, tests compare them) and becomes the real logger
for any other line. A worker whose lines are all plain (the per-call lines,
``ready``, ``shutting down``) never imports structlog.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from ._clock import iso_utc

if TYPE_CHECKING:
    import structlog

__all__ = ["ConsoleLines", "HeldLines", "SafeStderr", "configure", "flush", "get_logger"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class SafeStderr:
    """A write-only view of the current ``sys.stderr`` that drops what it
    cannot write. When the pool dies, the pipe behind stderr breaks; a log
    line (or a handler's print) must then be lost, not fail the call that
    logged it or the shutdown that follows."""

    def write(self, text: str) -> int:
        try:
            return sys.stderr.write(text)
        except (OSError, ValueError):  # broken pipe, closed file
            return len(text)

    def flush(self) -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        try:
            return sys.stderr.isatty()
        except (OSError, ValueError):
            return False


#: Lines at info and below are held at most this long, then written together ...
HOLD_SECONDS = 0.1
#: ... or as soon as this many characters are held.
HOLD_CHARS = 64 * 1024
#: What a line held unrendered counts toward HOLD_CHARS (a call's line is ~120), plus its strings' length.
_LATER_CHARS = 160


class HeldLines:
    """structlog's logger: rendered lines to stderr (through :class:`SafeStderr`).

    A write to a file or a pipe costs more than the rest of a ping, and at
    info every call logs a line. So lines at info and debug are held, up to
    HOLD_SECONDS or HOLD_CHARS, and written with one write; a warning or an
    error writes what is held and then itself at once, so lines keep their
    order and a problem reaches stderr before anything else happens. The
    exit path writes what is held (:func:`flush`); a SIGKILL loses at most
    HOLD_SECONDS of info lines. Safe from any thread.
    """

    def __init__(self) -> None:
        self._out = SafeStderr()
        self._lock = threading.Lock()
        self._held: list[str | tuple[Any, ...]] = []  # lines, and lines to render (see later())
        self._chars = 0
        self._due = threading.Event()  # something is held: the writer thread wakes
        self._thread: threading.Thread | None = None

    def hold(self, line: str) -> None:
        self._add(line, len(line) + 1)

    def later(self, seconds: float, level: str, event: str, event_dict: dict[str, Any], fmt: str) -> None:
        """Hold a line to be rendered when it is written (:func:`_render`):
        the event, its fields (plain scalars only, so they cannot change
        meanwhile) and the time it was logged. Rendering a batch at once
        costs a fraction of rendering each line while a call is answered."""
        chars = _LATER_CHARS + len(event)
        for value in event_dict.values():
            if type(value) is str:  # a caller's long request id counts for what it holds
                chars += len(value)
        self._add((seconds, level, event, event_dict, fmt), chars)

    def _add(self, entry: str | tuple[Any, ...], chars: int) -> None:
        with self._lock:
            self._held.append(entry)
            self._chars += chars
            if self._chars < HOLD_CHARS:
                if len(self._held) == 1:
                    self._wake_writer()
                return
            self._write_held("")

    def now(self, line: str) -> None:
        with self._lock:
            self._write_held(line + "\n")

    def flush(self) -> None:
        with self._lock:
            self._write_held("")

    debug = info = hold
    msg = warning = warn = error = critical = fatal = exception = failure = now

    def _forked(self) -> None:
        """In a forked child: fresh lock and writer (another thread may have
        held the lock at the fork), and no copy of the parent's held lines."""
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._thread = None
        self._held, self._chars = [], 0

    def _write_held(self, tail: str) -> None:  # with the lock
        if self._held:
            lines = [entry if isinstance(entry, str) else _render_held(entry) for entry in self._held]
            lines.append(tail)
            tail = "\n".join(lines)
            self._held, self._chars = [], 0
        if tail:
            self._out.write(tail)
            self._out.flush()

    def _wake_writer(self) -> None:  # with the lock
        if self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="snakepit-log", daemon=True)
            self._thread.start()
        self._due.set()

    def _writer(self) -> None:
        while True:
            self._due.wait()
            time.sleep(HOLD_SECONDS)
            with self._lock:
                self._due.clear()
                self._write_held("")


_sink = HeldLines()
atexit.register(lambda: _sink.flush())  # an ordinary interpreter exit (library use, tests)
os.register_at_fork(after_in_child=lambda: _sink._forked())  # a handler using multiprocessing's fork


def flush() -> None:
    """Write the log lines still held (the exit path calls this)."""
    _sink.flush()


class _Immediate:
    """The stdlib handler's stream: each record at once, after what is held."""

    def write(self, text: str) -> None:
        _sink.now(text.removesuffix("\n"))

    def flush(self) -> None:
        pass


def _dumps(obj: Any, **_: Any) -> str:
    # orjson: cheaper per line than the stdlib; objects it does not know are
    # rendered with str(), and what it refuses (an int beyond 64 bits) falls
    # back to the stdlib, so a log line never fails.
    try:
        return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(obj, default=str)


def _stamp(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog's ``TimeStamper(fmt="iso", utc=True)``, at a quarter of its cost."""
    event_dict["timestamp"] = iso_utc()
    return event_dict


class ConsoleLines:
    """structlog's ``ConsoleRenderer(colors=False)`` layout (timestamp, padded
    level and event, logger, sorted ``key=value``) in a few string joins: it
    renders the line of every call, and the full renderer costs more than the
    call itself. Lines with a stack or an exception go to the full renderer."""

    _QUOTE = frozenset(" \t=\r\n\"'")

    def __init__(self) -> None:
        import structlog.dev

        self._full = structlog.dev.ConsoleRenderer(colors=False)

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        if "exception" in event_dict or "exc_info" in event_dict or "stack" in event_dict:
            return self._full(logger, name, event_dict)
        pop = event_dict.pop
        head = []
        if "timestamp" in event_dict:
            head.append(str(pop("timestamp")))
        if "level" in event_dict:
            head.append(f"[{pop('level'):<9}]")
        if "event" in event_dict:
            head.append(f"{pop('event')!s:<30}")
        for key in ("logger", "logger_name"):
            if key in event_dict:
                head.append(f"[{pop(key)}]")
        quote = self._QUOTE
        head.extend(f"{k}={v if type(v) is str and quote.isdisjoint(v) else repr(v)}" for k, v in
                    sorted(event_dict.items()))
        return " ".join(head).rstrip(" ")


#: (level, format) as last given to :func:`configure`; None: never called.
_settings: tuple[str, str] | None = None
#: structlog has been set up from ``_settings`` (see :func:`_setup`).
_set_up = False
#: Every stand-in handed out: configure() makes them forget what they looked up.
_loggers: weakref.WeakSet[_Logger] = weakref.WeakSet()


def configure(level: str = "info", fmt: str = "console") -> None:
    """Route structlog and stdlib logging to stderr at ``level`` in ``fmt``
    ("console" or "json"). Stdlib loggers stay at WARNING or above unless
    ``level`` is debug: grpc and asyncio are chatty at info. structlog itself
    is set up on the first line logged (at once if it is imported already)."""
    global _settings, _set_up
    _settings, _set_up = (level, fmt), False
    for stand_in in list(_loggers):
        stand_in._forget()
    numeric = _LEVELS[level]
    handler = logging.StreamHandler(_Immediate())
    handler.setFormatter(_FirstUse())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric if numeric == logging.DEBUG else max(numeric, logging.WARNING))
    if "structlog" in sys.modules:
        _setup()


def _setup() -> None:
    """Import and configure structlog from ``_settings``, and give the stdlib
    handler its real formatter (the same renderer)."""
    global _set_up
    import structlog

    level, fmt = _settings or ("info", "console")
    numeric = _LEVELS[level]
    renderer = structlog.processors.JSONRenderer(serializer=_dumps) if fmt == "json" else ConsoleLines()
    exc = structlog.processors.format_exc_info if fmt == "json" else structlog.processors.StackInfoRenderer()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, _stamp, exc, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_: _sink,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, _stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, exc, renderer],
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, _FirstUse):
            handler.formatter.real = formatter
            handler.setFormatter(formatter)
    _set_up = True


class _FirstUse(logging.Formatter):
    """The stdlib handler's formatter until structlog is set up: the first
    record sets it up and is rendered by the real formatter."""

    real: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self.real is None:
            _setup()
        return self.real.format(record) if self.real is not None else super().format(record)


class _Logger:
    """What :func:`get_logger` returns: a structlog logger, made on first use.
    Each method is looked up once and then kept on this object, so a call
    through it costs what a call on the structlog logger costs, or less: a
    line whose fields are plain scalars is rendered as structlog's chain
    would render it (the same fields in the same layout) without importing
    structlog; at info or debug (the line of every call) it is held
    unrendered and rendered when written. A line with other values,
    exception or stack information, or while structlog context variables are
    bound goes through structlog."""

    def __init__(self, name: str, bound: dict[str, Any]) -> None:
        self._name = name
        self._bound = bound
        self._real: Any = None
        _loggers.add(self)

    def _forget(self) -> None:
        name, bound = self._name, self._bound
        self.__dict__.clear()
        self._name, self._bound, self._real = name, bound, None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        settings = _settings
        if settings is not None and attr in _DIRECT and _LEVELS[attr] >= _LEVELS[settings[0]]:
            value = self.__dict__[attr] = _direct(attr, self, settings[1])
            return value
        return self._slow(attr, keep=True)

    def _slow(self, attr: str, keep: bool = False) -> Any:
        """``attr`` of the structlog logger (set up now if it is not yet);
        ``keep``: on this object, for the next lookups."""
        if not _set_up and _settings is not None and _LEVELS.get(attr, logging.CRITICAL) < _LEVELS[_settings[0]]:
            return _drop  # filtered out: no reason to import structlog for it (not kept: configure may change)
        real = self._real
        if real is None:
            real = self._real = _real_logger(self._name, self._bound)
        value = getattr(real, attr)
        if keep and attr in _KEPT:
            self.__dict__[attr] = value
        return value


_HELD = ("info", "debug")
#: Levels whose plain lines skip structlog: held ones, and ones written at once.
_DIRECT = (*_HELD, "warning", "error")
_PLAIN = frozenset({str, int, float, bool, type(None)})
#: Fields structlog's processors or renderers treat specially: a line with one goes through structlog.
_RESERVED = frozenset({"timestamp", "level", "event", "logger", "logger_name", "exception", "exc_info",
                       "stack", "stack_info"})


def _plain(fields: dict[str, Any]) -> bool:
    return _PLAIN.issuperset(map(type, fields.values())) and _RESERVED.isdisjoint(fields)


def _direct(level: str, logger: _Logger, fmt: str) -> Any:
    """``log.<level>`` without structlog's machinery (see :class:`_Logger`): an
    info or debug line is held unrendered; a warning or error is rendered and
    written at once (after what is held), so no exit path waits for structlog
    to be imported just to say why it exits."""
    bound = logger._bound
    later, now, modules = _sink.later, time.time, sys.modules
    held = level in _HELD
    slow: Any = None
    if not _plain(bound):
        return logger._slow(level, keep=True)

    plain, reserved = _PLAIN.issuperset, _RESERVED.isdisjoint

    def emit(event: Any = None, *args: Any, **kw: Any) -> None:
        nonlocal slow
        if (args or type(event) is not str or not plain(map(type, kw.values())) or not reserved(kw)
                or _context_bound(modules)):
            if slow is None:
                slow = logger._slow(level)
            return slow(event, *args, **kw)
        fields = {**bound, **kw} if bound else kw
        if held:
            later(now(), level, event, fields, fmt)
            return None
        try:
            line = _render(now(), level, event, fields, fmt)
        except ValueError:  # an int past Python's digit limit: structlog says what it says
            return logger._slow(level)(event, **kw)
        _sink.now(line)
        return None

    return emit


def _context_bound(modules: dict[str, Any]) -> bool:
    """Whether structlog context variables may be bound (merge_contextvars would add them)."""
    cv = modules.get("structlog.contextvars")
    return cv is not None and bool(cv._CONTEXT_VARS)


def _render(seconds: float, level: str, event: str, fields: dict[str, Any], fmt: str) -> str:
    """A line held by :meth:`HeldLines.later`, as structlog's chain renders it
    (:class:`ConsoleLines`, or the JSON renderer: fields, event, level, timestamp)."""
    if fmt == "json":
        return _dumps({**fields, "event": event, "level": level, "timestamp": iso_utc(seconds)})
    keys = tuple(fields)
    layout = _layouts.get((level, event, keys))
    if layout is None:
        # "[level    ] event<padded> key=" and the keys' order, kept for the next line like it.
        layout = (f"[{level:<9}] {event:<30}", sorted(keys))
        if len(_layouts) < 256:  # events whose names vary must not grow it for ever
            _layouts[(level, event, keys)] = layout
    head, order = layout
    if not order:
        return f"{iso_utc(seconds)} {head}".rstrip(" ")
    isdisjoint = ConsoleLines._QUOTE.isdisjoint
    return f"{iso_utc(seconds)} {head} " + " ".join(
        [f"{k}={v if type(v) is str and isdisjoint(v) else repr(v)}" for k in order for v in (fields[k],)])


def _render_held(entry: tuple[Any, ...]) -> str:
    try:
        return _render(*entry)
    except Exception as exc:  # noqa: BLE001 - an int past Python's digit limit: keep the writer alive
        return f"{iso_utc(entry[0])} [{entry[1]:<9}] {entry[2]} (line not rendered: {type(exc).__name__}: {exc})"


#: (level, event, field names) -> (head, sorted field names), for :func:`_render`.
_layouts: dict[tuple[str, str, tuple[str, ...]], tuple[str, list[str]]] = {}


def _drop(*_args: Any, **_kw: Any) -> None:
    return None


_KEPT = frozenset({"debug", "info", "warning", "warn", "error", "critical", "exception", "msg", "log",
                   "adebug", "ainfo", "awarning", "aerror"})


def _real_logger(name: str, bound: dict[str, Any]) -> Any:
    import structlog

    if not _set_up and (_settings is not None or not structlog.is_configured()):
        _setup()  # structlog's own default writes to stdout: never that
    logger = structlog.get_logger(name)
    return logger.bind(**bound) if bound else logger


def get_logger(name: str = "snakepit_bridge", **bound: Any) -> structlog.typing.FilteringBoundLogger:
    """A bound logger (structlog is set up when it first logs; see the module docstring)."""
    return _Logger(name, bound)
