"""A module imported on its first use: ``asyncio = lazy_module("asyncio")``.

A stdio worker answers its first frames without an event loop
(:mod:`.transports._serial`), and importing asyncio (with ``ssl``,
``socket``, ``subprocess``, ``concurrent.futures``) is about a third of its
start-up. The modules on that path bind ``asyncio`` with this instead of
``import asyncio`` (under ``TYPE_CHECKING`` they import it as usual, for the
type checker): it is the real module if something imported it already, else
a module object that runs the real import on its first attribute access
(:class:`importlib.util.LazyLoader`) and is the ordinary module from then on,
at no cost per access. Any ``import asyncio`` elsewhere gets that same
object, loaded.

The first access must not race another thread's (LazyLoader is not
thread-safe in Python 3.11): in the bridge it is the main thread's, when the
event loop is made. Nothing at module level may touch the attributes of a
module bound this way, or it is imported at once.
"""
from __future__ import annotations

import importlib.util
import sys
import types

__all__ = ["lazy_module"]


def lazy_module(name: str) -> types.ModuleType:
    """The module ``name``: the loaded one, or one that loads itself on first use."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # not found, or a namespace package: import it now (and fail now)
        return importlib.import_module(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
