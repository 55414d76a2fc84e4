"""Structured logging with structlog, always to stderr.

stdout is the protocol channel in stdio mode and the ready channel in gRPC
mode, so nothing here may ever touch it. Records from the standard library's
``logging`` (grpc's Python layer, asyncio, third-party libraries a handler
uses) are rendered by the same renderer, so ``--log-format json`` yields one
JSON object per stderr line whatever logged it. gRPC's C core logs to stderr
by itself (``GRPC_VERBOSITY`` / ``GRPC_TRACE`` control it).

Levels: ``info`` gives one line per call (emitted by the dispatcher) plus
lifecycle lines; per-chunk lines are ``debug`` only.
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Any

import orjson

import structlog

__all__ = ["SafeStderr", "configure", "get_logger"]

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


def _dumps(obj: Any, **_: Any) -> str:
    # orjson: cheaper per line than the stdlib; objects it does not know are
    # rendered with str(), and what it refuses (an int beyond 64 bits) falls
    # back to the stdlib, so a log line never fails.
    try:
        return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(obj, default=str)


def configure(level: str = "info", fmt: str = "console") -> None:
    """Route structlog and stdlib logging to stderr at ``level`` in ``fmt``
    ("console" or "json"). Stdlib loggers stay at WARNING or above unless
    ``level`` is debug: grpc and asyncio are chatty at info."""
    numeric = _LEVELS[level]
    renderer = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    exc = structlog.processors.format_exc_info if fmt == "json" else structlog.processors.StackInfoRenderer()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, stamp, exc, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=SafeStderr()),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(SafeStderr())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, exc, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric if numeric == logging.DEBUG else max(numeric, logging.WARNING))


def get_logger(name: str = "snakepit_bridge", **bound) -> structlog.typing.FilteringBoundLogger:
    """A bound logger. Configures stderr output first if nobody has yet, since
    structlog's own default writes to stdout."""
    if not structlog.is_configured():
        configure()
    return structlog.get_logger(name).bind(**bound) if bound else structlog.get_logger(name)
