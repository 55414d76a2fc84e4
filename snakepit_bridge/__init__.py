"""snakepit-bridge: the Python worker daemon behind an Elixir Snakepit pool.

Write handlers with :func:`command` and serve them with ``grpc_bridge.py``::

    from snakepit_bridge import command

    @command("count_words")
    def count_words(args, ctx):
        for i, line in enumerate(args["lines"]):
            yield {"line": i, "words": len(line.split())}
"""
from __future__ import annotations

__version__ = "0.4.0"

from .chunks import Chunk, ChunkError, Final
from .context import Context
from .errors import (
    BridgeError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ShuttingDown,
    UnknownCommand,
)
from .registry import Handler, Kind, Registry, command, default_registry

__all__ = [
    "BridgeError",
    "Cancelled",
    "Chunk",
    "ChunkError",
    "Context",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Final",
    "Handler",
    "InvalidArgument",
    "Kind",
    "NotFound",
    "Registry",
    "ResourceExhausted",
    "ShuttingDown",
    "UnknownCommand",
    "__version__",
    "command",
    "default_registry",
]
