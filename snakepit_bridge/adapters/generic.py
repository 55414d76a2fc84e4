"""``--adapter snakepit_bridge.adapters.generic.GenericCommandHandler``: the
basic command set (ping, echo, compute, info, store/retrieve and sessions)."""
from __future__ import annotations

from ..commands import BASIC
from ._base import BuiltinAdapter


class GenericCommandHandler(BuiltinAdapter):
    families = BASIC
