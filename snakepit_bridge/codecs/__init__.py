"""Value codecs: how one arg, result or chunk value becomes bytes and back.

* :mod:`.values`: the per-value rules for gRPC maps (JSON at or below the
  binary threshold; npy, raw bytes, UTF-8 or MessagePack above it) and the
  ``arg_encodings`` decoding.
* :mod:`.npy`: ``.npy`` bytes with one copy out and none in; never pickle.
* :mod:`.frames`: whole JSON / MessagePack frames for the stdio transport.
"""
from __future__ import annotations

from .frames import dumps_json, dumps_msgpack, json_safe, loads_json, loads_msgpack
from .values import (
    DEFAULT_THRESHOLD,
    ENCODINGS,
    JSON,
    MSGPACK,
    NPY,
    RAW,
    UTF8,
    decode_map,
    decode_value,
    encode_map,
    encode_value,
    json_exceeds,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "ENCODINGS",
    "JSON",
    "MSGPACK",
    "NPY",
    "RAW",
    "UTF8",
    "decode_map",
    "decode_value",
    "dumps_json",
    "dumps_msgpack",
    "encode_map",
    "encode_value",
    "json_exceeds",
    "json_safe",
    "loads_json",
    "loads_msgpack",
]
