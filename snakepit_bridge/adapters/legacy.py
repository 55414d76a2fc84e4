"""Loading ``--adapter`` targets and wrapping Snakepit 0.3 adapter classes."""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from ..chunks import ChunkError, Final
from ..errors import BridgeError
from ..registry import Kind, Registry, default_registry

__all__ = ["AdapterError", "load_adapter", "wrap_legacy"]


class AdapterError(Exception):
    """The adapter named on the command line cannot be loaded."""


def load_adapter(path: str) -> Registry:
    """The commands ``path`` (``MODULE.CLASS`` or ``MODULE``) provides.

    Raises :class:`AdapterError` with one clear sentence when it cannot.
    """
    module_name, _, attr = path.rpartition(".")
    target: Any
    try:
        module = importlib.import_module(module_name) if module_name else None
        target = getattr(module, attr) if module is not None and hasattr(module, attr) else None
        if target is None:
            target = importlib.import_module(path)  # a plain module of @command handlers
    except ImportError as exc:
        raise AdapterError(f"cannot import adapter {path!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the adapter's own import-time failure
        raise AdapterError(f"adapter {path!r} failed while importing: {type(exc).__name__}: {exc}") from None

    registry = Registry()
    registry.update(default_registry)  # commands registered with @command at import
    if isinstance(target, type):
        try:
            target = target()
        except Exception as exc:  # noqa: BLE001
            raise AdapterError(f"adapter {path!r} failed to initialise: {type(exc).__name__}: {exc}") from None
    if isinstance(getattr(target, "registry", None), Registry):
        registry.update(target.registry)
    elif hasattr(target, "process_command") or hasattr(target, "process_stream_command"):
        registry.update(wrap_legacy(target))
    elif not hasattr(target, "__path__") and not hasattr(target, "__file__"):
        raise AdapterError(
            f"adapter {path!r} is neither a command handler class (process_command / "
            "get_supported_commands) nor a module of @command handlers"
        )
    return registry


def wrap_legacy(adapter: Any) -> Registry:
    """A registry serving a Snakepit 0.3 adapter instance.

    Commands it registered (``adapter.commands``) are unary; other supported
    commands, or those ``get_streaming_commands()`` lists, go to
    ``process_stream_command``, whose ``{"data", "is_final", "error"}`` dicts
    become chunks.
    """
    registry = Registry()
    supported = list(adapter.get_supported_commands()) if hasattr(adapter, "get_supported_commands") else []
    unary = set(getattr(adapter, "commands", {}) or {})
    if hasattr(adapter, "get_streaming_commands"):
        streaming = set(adapter.get_streaming_commands())
    elif hasattr(adapter, "process_stream_command"):
        streaming = {name for name in supported if name not in unary}
    else:
        streaming = set()
    for name in supported:
        if name in streaming:
            registry.add(name, _legacy_stream(adapter, name), kind=Kind.GENERATOR,
                         description=f"{type(adapter).__name__}.process_stream_command")
        elif hasattr(adapter, "process_command"):
            registry.add(name, _legacy_call(adapter, name), kind=Kind.FUNCTION,
                         description=f"{type(adapter).__name__}.process_command")
    return registry


def _legacy_call(adapter: Any, name: str):
    def call(args: dict[str, Any]) -> Any:
        result = adapter.process_command(name, args)
        # 0.3 adapters sometimes reported failure in-band, as {"success": False,
        # "error": ...} or (0.3's own convention, e.g. for an unknown command)
        # {"status": "error", "error": ...}; either is a failure here.
        if isinstance(result, dict) and "error" in result and (
                result.get("success") is False or result.get("status") == "error"):
            raise BridgeError(str(result["error"]), code="UNKNOWN")
        return result

    return call


def _legacy_stream(adapter: Any, name: str):
    def stream(args: dict[str, Any]) -> Iterator[Any]:
        for item in adapter.process_stream_command(name, args):
            if not isinstance(item, dict) or not ({"data", "is_final", "error"} & item.keys()):
                yield item
                continue
            data = item.get("data")
            data = data if isinstance(data, dict) else ({} if data is None else {"value": data})
            error = item.get("error")
            if error and item.get("is_final"):
                raise BridgeError(str(error), code="UNKNOWN")
            if error:
                yield ChunkError(str(error), data)
            elif item.get("is_final"):
                yield Final(data)
                return
            else:
                yield data

    return stream
