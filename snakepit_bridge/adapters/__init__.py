"""Adapters: what ``--adapter MODULE.CLASS`` can name.

* our own adapter classes (:mod:`.grpc_streaming`, :mod:`.generic`), which
  carry a ready :class:`~snakepit_bridge.registry.Registry`;
* Snakepit 0.3 adapter classes (``process_command`` / ``get_supported_commands``
  and optionally ``process_stream_command``), wrapped by :mod:`.legacy`;
* any module whose import registers commands with ``@command``.
"""
from __future__ import annotations

from .legacy import load_adapter

__all__ = ["load_adapter"]
