"""Built-in commands, one module per family, each with its own ``registry``."""
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
