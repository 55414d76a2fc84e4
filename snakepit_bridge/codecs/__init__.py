"""Value codecs: how one arg, result or chunk value becomes bytes and back.

See :mod:`snakepit_bridge.codecs.values` for the rules (JSON below the binary
threshold; npy, raw bytes, UTF-8 or MessagePack above it).
"""
from __future__ import annotations

from .values import (
    JSON,
    MSGPACK,
    NPY,
    RAW,
    UTF8,
    decode_map,
    decode_value,
    encode_map,
    encode_value,
)

__all__ = [
    "JSON",
    "MSGPACK",
    "NPY",
    "RAW",
    "UTF8",
    "decode_map",
    "decode_value",
    "encode_map",
    "encode_value",
]
