"""Snakepit 0.3's adapter base class, kept so 0.3 adapters load unchanged.

A 0.3 adapter subclasses :class:`BaseCommandHandler`, registers functions in
``_register_commands`` and may add ``process_stream_command`` for streaming
commands. ``--adapter`` wraps such a class into the registry
(:mod:`snakepit_bridge.adapters.legacy`); new code should use ``@command``.

0.3's base class also gave subclasses ``start_time``, ``request_count``,
``_command_registry`` and ``_handle_unknown_command`` (0.3's own
``handle_ping``/``handle_info`` use the first two), so they are here too.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["BaseCommandHandler"]


class BaseCommandHandler:
    """Name -> function table with Snakepit 0.3's method names and attributes."""

    def __init__(self) -> None:
        self.start_time = time.time()
        self.request_count = 0
        self._command_registry: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self._register_commands()

    # ``commands`` is our name for 0.3's ``_command_registry``: one dict under
    # both names, so an adapter that fills either (or replaces it) is seen by
    # both the wrapper (which reads ``commands``) and 0.3-style code.
    @property
    def commands(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return self._command_registry

    @commands.setter
    def commands(self, value: dict[str, Callable[[dict[str, Any]], Any]]) -> None:
        self._command_registry = value

    def _register_commands(self) -> None:
        """Override: call :meth:`register_command` for each command."""

    def register_command(self, name: str, handler: Callable[[dict[str, Any]], Any]) -> None:
        self._command_registry[name] = handler

    def get_supported_commands(self) -> list[str]:
        return list(self._command_registry)

    def process_command(self, command: str, args: dict[str, Any]) -> Any:
        # Counted before the lookup, as 0.3 did (its handle_info reports it).
        self.request_count += 1
        handler = self._command_registry.get(command)
        if handler is None:
            return self._handle_unknown_command(command)
        return handler(args)

    def _handle_unknown_command(self, command: str) -> dict[str, Any]:
        """0.3's in-band answer to an unknown command (the wrapper turns
        ``status: error`` into a failure); a subclass may override it."""
        return {
            "status": "error",
            "error": f"Unknown command: {command}",
            "supported_commands": self.get_supported_commands(),
            "timestamp": time.time(),
        }
