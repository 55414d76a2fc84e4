"""Value codecs: how one arg, result or chunk value becomes bytes and back.

* :mod:`.values`: the per-value rules for gRPC maps (JSON at or below the
  binary threshold, or at any size for a caller that accepts no binary
  encoding; npy, raw bytes, UTF-8 or MessagePack above it) and the
  ``arg_encodings`` decoding.
* :mod:`.pieces`: large JSON and MessagePack encoded in pieces in worker
  threads (the same bytes as one call), so the event loop gets the GIL between them.
* :mod:`.nesting`: the one check that decoded arguments nest at most 200 levels deep.
* :mod:`.npy`: ``.npy`` bytes with one copy out and none in; never pickle.
* :mod:`.frames`: the stdio transport's JSON and MessagePack frame codecs
  (how bytes, arrays and other non-JSON values travel in frames).
"""
from __future__ import annotations

from .frames import CODECS, Codec, Encoded, JsonCodec, MsgpackCodec, PayloadError
from .values import (
    ACCEPT_ALL,
    ACCEPT_NONE,
    BINARY_ENCODINGS,
    DEFAULT_THRESHOLD,
    ENCODINGS,
    JSON,
    MSGPACK,
    NPY,
    RAW,
    UTF8,
    accepted,
    decode_map,
    decode_value,
    encode_map,
    encode_value,
    json_exceeds,
)

__all__ = [
    "CODECS",
    "Codec",
    "Encoded",
    "JsonCodec",
    "MsgpackCodec",
    "PayloadError",
    "ACCEPT_ALL",
    "ACCEPT_NONE",
    "BINARY_ENCODINGS",
    "DEFAULT_THRESHOLD",
    "ENCODINGS",
    "JSON",
    "MSGPACK",
    "NPY",
    "RAW",
    "UTF8",
    "accepted",
    "decode_map",
    "decode_value",
    "encode_map",
    "encode_value",
    "json_exceeds",
]
