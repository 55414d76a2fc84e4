"""Spawn the real ``grpc_bridge.py`` the way a Snakepit pool does, and wait for it.

No sleeps: readiness is the ready line (gRPC) or the answer to the init ping
(stdio), each with a timeout. The machinery is :mod:`snakepit_bridge.testing`;
this module pins it to this checkout's ``grpc_bridge.py``.
"""
from __future__ import annotations

from pathlib import Path

from snakepit_bridge import testing
from snakepit_bridge.testing import READY_PREFIX as READY

__all__ = ["Bridge", "READY", "ROOT", "SCRIPT"]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "grpc_bridge.py"


class Bridge(testing.Bridge):
    """:class:`snakepit_bridge.testing.Bridge` running this checkout's ``grpc_bridge.py``."""

    def __init__(self, *args: str, cwd: Path = ROOT, **kwargs) -> None:
        super().__init__(*args, script=SCRIPT, cwd=cwd, **kwargs)
