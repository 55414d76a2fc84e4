"""The adapter the stock Snakepit ``GRPCPython`` Elixir adapter names:
``--adapter snakepit_bridge.adapters.grpc_streaming.GRPCStreamingHandler``.
It serves every built-in command."""
from __future__ import annotations

from ..commands import ALL
from ._base import BuiltinAdapter


class GRPCStreamingHandler(BuiltinAdapter):
    families = ALL
