"""Built-in commands, one module per family, each with its own ``registry``.

Commands declare their parameters with ``@dataclass(repr=False, eq=False)``
records (see :mod:`snakepit_bridge.params`): the records are built at every
start, and generating ``__repr__`` and ``__eq__`` would be most of their cost.
"""
from __future__ import annotations

import importlib

from ..registry import Registry

__all__ = ["BASIC", "ALL", "builtin_registry"]

#: The families GenericCommandHandler serves.
BASIC = ("basic", "sessions")
#: Everything GRPCStreamingHandler (and a bare ``grpc_bridge.py``) serves.
ALL = ("basic", "sessions", "streaming", "data", "inference", "logs")


def builtin_registry(families: tuple[str, ...] = ALL) -> Registry:
    """A fresh registry holding the built-in commands of ``families``."""
    registry = Registry()
    for name in families:
        module = importlib.import_module(f"{__name__}.{name}")
        registry.update(module.registry)
    return registry
