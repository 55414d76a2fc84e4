"""Our adapter classes: a registry of built-ins, plus Snakepit 0.3's method
names for code that calls an adapter directly."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from ..commands import builtin_registry
from ..dispatch import Dispatcher, Request


class BuiltinAdapter:
    families: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.registry = builtin_registry(self.families, lazy=True)

    def get_supported_commands(self) -> list[str]:
        return self.registry.names()

    def process_command(self, command: str, args: dict[str, Any]) -> Any:
        """Run a command outside the server (tests, scripts); raises on failure."""
        result = asyncio.run(Dispatcher(self.registry).call(Request(command, dict(args))))
        if not result.success:
            raise RuntimeError(result.error)
        return result.result

    def process_stream_command(self, command: str, args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """0.3-style ``{"data", "is_final", "error"}`` dicts, collected."""

        async def collect() -> list[dict[str, Any]]:
            d = Dispatcher(self.registry)
            return [{"data": c.data, "is_final": c.is_final, "error": c.error} async for c in d.stream(Request(command, dict(args)))]

        yield from asyncio.run(collect())
