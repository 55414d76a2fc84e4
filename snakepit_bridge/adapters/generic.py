"""``--adapter snakepit_bridge.adapters.generic.GenericCommandHandler``: the
basic command set (ping, echo, compute, info, store/retrieve and sessions)."""
from __future__ import annotations

from ._base import BuiltinAdapter
from ..commands import BASIC


class GenericCommandHandler(BuiltinAdapter):
    families = BASIC
