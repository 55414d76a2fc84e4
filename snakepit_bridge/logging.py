"""Structured logging with structlog, always to stderr.

stdout is the protocol channel in stdio mode and the ready channel in gRPC
mode, so nothing here may ever touch it.
"""
from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure", "get_logger"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "console") -> None:
    """Route structlog (and stdlib logging, e.g. grpc's) to stderr at ``level``."""
    numeric = _LEVELS[level]
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if fmt == "json" else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [logging.StreamHandler(sys.stderr)]
    root.setLevel(max(numeric, logging.WARNING))


def get_logger(name: str = "snakepit_bridge", **bound) -> structlog.typing.FilteringBoundLogger:
    """A bound logger. Configures stderr output first if nobody has yet, since
    structlog's own default writes to stdout."""
    if not structlog.is_configured():
        configure()
    return structlog.get_logger(name).bind(**bound) if bound else structlog.get_logger(name)
