"""Built-in commands, one module per family, each with its own ``registry``.

A worker imports a family on the first call of one of its commands, not at
start-up: :data:`COMMANDS` names every built-in command's family, so GetInfo
and the registry list them all before any is imported (a test checks the
table against the modules).

Commands declare their parameters with ``@dataclass(repr=False, eq=False)``
records (see :mod:`snakepit_bridge.params`): the records are built at every
start, and generating ``__repr__`` and ``__eq__`` would be most of their cost.
"""
from __future__ import annotations

import functools
import importlib

from ..registry import Registry

__all__ = ["BASIC", "ALL", "COMMANDS", "builtin_registry"]

#: The families GenericCommandHandler serves.
BASIC = ("basic", "sessions")
#: Everything GRPCStreamingHandler (and a bare ``grpc_bridge.py``) serves.
ALL = ("basic", "sessions", "streaming", "data", "inference", "logs")

#: Command name -> the family module that registers it. A new built-in command goes here too.
COMMANDS: dict[str, str] = {
    **dict.fromkeys(("ping", "echo", "compute", "info", "echo_payload", "describe"), "basic"),
    **dict.fromkeys(("store", "retrieve", "delete", "session_info", "end_session", "list_sessions"), "sessions"),
    "ping_stream": "streaming",
    "process_large_dataset": "data",
    "batch_inference": "inference",
    "tail_and_analyze": "logs",
}


@functools.cache
def _family(name: str) -> Registry:
    return importlib.import_module(f"{__name__}.{name}").registry


def builtin_registry(families: tuple[str, ...] = ALL, *, lazy: bool = False) -> Registry:
    """A fresh registry holding the built-in commands of ``families``; with
    ``lazy``, each family is imported on the first lookup of one of its commands."""
    registry = Registry()
    for family in families:
        if lazy:
            registry.defer([n for n, f in COMMANDS.items() if f == family], functools.partial(_family, family))
        else:
            registry.update(_family(family))
    return registry
