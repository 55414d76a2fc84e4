"""A module imported on its first use: ``asyncio = lazy_module("asyncio")``.

A stdio worker answers its first frames without an event loop
(:mod:`.transports._serial`), and importing asyncio (with ``ssl``,
``socket``, ``subprocess``, ``concurrent.futures``) is about a third of its
start-up. The modules on that path bind ``asyncio`` with this instead of
``import asyncio`` (under ``TYPE_CHECKING`` they import it as usual, for the
type checker): it is the real module if something imported it already, else
a module object that runs the real import on its first attribute access and
is the ordinary module from then on, at no cost per access. Any ``import
asyncio`` elsewhere gets that same object, loaded.

This is :class:`importlib.util.LazyLoader`'s mechanism, with the lock that
Python 3.12 added to it: a thread that touches the module while another one
loads it waits for the load (in 3.11 it would see a half-initialized module),
e.g. a log line written from a helper thread that imports structlog, which
imports asyncio, while the main thread makes the event loop. Nothing at
module level may touch the attributes of a module bound this way, or it is
imported at once.
"""
from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Any

__all__ = ["lazy_module"]


def lazy_module(name: str) -> types.ModuleType:
    """The module ``name``: the loaded one, or one that loads itself on first use."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # not found, or a namespace package: import it now (and fail now)
        return importlib.import_module(name)
    module = importlib.util.module_from_spec(spec)
    spec.loader_state = {"lock": threading.RLock(), "loading": False}
    module.__class__ = _LazyModule
    sys.modules[name] = module
    return module


class _LazyModule(types.ModuleType):
    """Loads itself (once, under a lock) on the first attribute access."""

    def __getattribute__(self, attr: str) -> Any:
        spec = object.__getattribute__(self, "__spec__")
        state = spec.loader_state
        with state["lock"]:
            if object.__getattribute__(self, "__class__") is _LazyModule:
                if state["loading"]:  # the load itself, in this thread: the module as far as it got
                    return object.__getattribute__(self, attr)
                state["loading"] = True
                try:
                    spec.loader.exec_module(self)
                except BaseException:
                    sys.modules.pop(spec.name, None)  # as a failed import leaves it: the next import tries again
                    raise
                finally:
                    state["loading"] = False
                self.__class__ = types.ModuleType  # type: ignore[assignment]  # loaded: an ordinary module
        return getattr(self, attr)

    def __delattr__(self, attr: str) -> None:
        self.__getattribute__(attr)  # load first, so that the deletion is not undone by the load
        delattr(self, attr)
