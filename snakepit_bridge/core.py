"""Snakepit 0.3's adapter base class, kept so 0.3 adapters load unchanged.

A 0.3 adapter subclasses :class:`BaseCommandHandler`, registers functions in
``_register_commands`` and may add ``process_stream_command`` for streaming
commands. ``--adapter`` wraps such a class into the registry
(:mod:`snakepit_bridge.adapters.legacy`); new code should use ``@command``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["BaseCommandHandler"]


class BaseCommandHandler:
    """Name -> function table with Snakepit 0.3's method names."""

    def __init__(self) -> None:
        self.commands: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self._register_commands()

    def _register_commands(self) -> None:
        """Override: call :meth:`register_command` for each command."""

    def register_command(self, name: str, handler: Callable[[dict[str, Any]], Any]) -> None:
        self.commands[name] = handler

    def get_supported_commands(self) -> list[str]:
        return list(self.commands)

    def process_command(self, command: str, args: dict[str, Any]) -> Any:
        try:
            handler = self.commands[command]
        except KeyError:
            raise ValueError(f"Unknown command: {command}") from None
        return handler(args)
