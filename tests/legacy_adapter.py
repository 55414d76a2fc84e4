"""Snakepit 0.3-style adapters, written the way 0.3 users wrote them."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterator

from snakepit_bridge.core import BaseCommandHandler


class LegacyHandler(BaseCommandHandler):
    def _register_commands(self):
        self.register_command("ping", self.handle_ping)
        self.register_command("shout", self.handle_shout)
        self.register_command("legacy_fail", self.handle_fail)

    def handle_ping(self, args: Dict[str, Any]) -> Dict[str, Any]:
        return {"status": "ok", "timestamp": time.time(), "message": "legacy pong"}

    def handle_shout(self, args):
        return {"text": str(args.get("text", "")).upper()}

    def handle_fail(self, args):
        raise KeyError("missing thing")

    def get_supported_commands(self) -> list:
        return super().get_supported_commands() + ["count_up", "legacy_stream_error"]

    def process_stream_command(self, command: str, args: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        if command == "count_up":
            n = args.get("n", 3)
            for i in range(n):
                yield {"data": {"n": str(i + 1)}, "is_final": i == n - 1}
        elif command == "legacy_stream_error":
            yield {"data": {"ok": "1"}, "is_final": False}
            yield {"data": {}, "is_final": False, "error": "item 2 failed"}
            yield {"data": {"ok": "3"}, "is_final": False}
        else:
            yield {"data": {}, "is_final": True, "error": f"Unknown streaming command: {command}"}


class PlainLegacyHandler:
    """No base class at all: only the 0.3 method names."""

    def get_supported_commands(self):
        return ["hello"]

    def process_command(self, command, args):
        if command == "hello":
            return {"greeting": f"hello {args.get('name', 'world')}"}
        raise ValueError(f"Unknown command: {command}")


class StatefulLegacyHandler(BaseCommandHandler):
    """Leans on what 0.3's base class gave subclasses: ``start_time``,
    ``request_count``, ``_command_registry`` and the in-band
    ``{"status": "error", "error": ...}`` convention."""

    def _register_commands(self):
        self.register_command("stats", self.handle_stats)
        self.register_command("safe_divide", self.handle_safe_divide)
        self._command_registry["direct"] = lambda args: {"direct": True}

    def handle_stats(self, args):
        return {"status": "ok", "uptime": time.time() - self.start_time, "requests_handled": self.request_count}

    def handle_safe_divide(self, args):
        try:
            return {"status": "ok", "result": args["a"] / args["b"]}
        except Exception as e:  # noqa: BLE001 - 0.3 style: report the failure in the result
            return {"status": "error", "error": str(e), "timestamp": time.time()}
