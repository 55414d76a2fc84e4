"""Encoding of single values in ``args``, ``result`` and ``chunk`` maps.

Outgoing (result and chunk values), each value on its own:

* ``bytes``-like: raw bytes at any size (encoding ``raw``).
* ``str``: JSON (quoted) up to the threshold, raw UTF-8 above it (``utf8``).
* numpy arrays: JSON lists up to the threshold, ``.npy`` bytes above it (``npy``).
* anything else: JSON via orjson up to the threshold, MessagePack above it
  (``msgpack``). With threshold 0, dicts, lists and tuples are always
  MessagePack; scalars stay JSON.

JSON values carry no entry in the ``encodings`` map, so a Snakepit 0.3 client
that ignores the map decodes them exactly as before; binary values reach it as
binaries. JSON has no NaN or infinity: orjson sends them as ``null``; use a
binary encoding (npy, msgpack) to carry them.

Incoming (args): with an ``arg_encodings`` entry, that encoding; without one,
CONTRACT.md §3: valid JSON is decoded as JSON, else valid UTF-8 as a string,
else the raw bytes. So the string ``"123"`` arrives as the number 123: the
Elixir client sends strings raw and everything else as JSON, and the bytes
cannot tell the two apart. A client that needs the string sends
``arg_encodings={"key": "utf8"}``.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import msgpack
import orjson

from ..errors import InvalidArgument

JSON, UTF8, RAW, NPY, MSGPACK = "json", "utf8", "raw", "npy", "msgpack"
ENCODINGS = (JSON, UTF8, RAW, NPY, MSGPACK)

_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_BYTES_TYPES = (bytes, bytearray, memoryview)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays orjson does not take natively
        return obj.tolist()
    raise TypeError(f"values of type {type(obj).__name__} cannot be encoded")


def _is_ndarray(value: Any) -> bool:
    return type(value).__name__ == "ndarray" and type(value).__module__ == "numpy"


def _to_npy(array: Any) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _from_npy(data: bytes) -> Any:
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def _msgpack_default(obj: Any) -> Any:
    if _is_ndarray(obj) or hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"values of type {type(obj).__name__} cannot be encoded")


def encode_value(value: Any, threshold: int = 10_240) -> tuple[bytes, str]:
    """``(bytes, encoding)`` for one outgoing value; encoding ``json`` means
    the value needs no entry in the ``encodings`` map."""
    if isinstance(value, bytes):
        return value, RAW
    if isinstance(value, _BYTES_TYPES):
        return bytes(value), RAW
    if isinstance(value, str):
        if len(value) > threshold // 4 or threshold == 0:  # cheap pre-check: a char is at most 4 bytes
            data = value.encode("utf-8")
            if len(data) > threshold:
                return data, UTF8
        return orjson.dumps(value), JSON
    if _is_ndarray(value):
        if value.nbytes > threshold:
            return _to_npy(value), NPY
        return orjson.dumps(value, default=_json_default, option=_JSON_OPTS), JSON
    if threshold == 0 and isinstance(value, (dict, list, tuple)):
        return msgpack.packb(value, default=_msgpack_default, use_bin_type=True), MSGPACK
    try:
        data = orjson.dumps(value, default=_json_default, option=_JSON_OPTS)
    except orjson.JSONEncodeError:
        # e.g. integers beyond 64 bits: JSON can carry them, orjson cannot.
        import json

        data = json.dumps(value, default=_json_default).encode()
    if len(data) > threshold:
        try:
            return msgpack.packb(value, default=_msgpack_default, use_bin_type=True), MSGPACK
        except (OverflowError, TypeError, ValueError):
            pass  # msgpack cannot carry it (e.g. a huge int): JSON can
    return data, JSON


def decode_value(data: bytes, encoding: str | None = None) -> Any:
    """One incoming value; ``encoding`` None follows CONTRACT.md §3."""
    if not encoding:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data
    if encoding == JSON:
        return orjson.loads(data)
    if encoding == UTF8:
        return data.decode("utf-8")
    if encoding == RAW:
        return data
    if encoding == NPY:
        return _from_npy(data)
    if encoding == MSGPACK:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    raise InvalidArgument(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")


def encode_map(values: Mapping[str, Any], threshold: int = 10_240) -> tuple[dict[str, bytes], dict[str, str]]:
    """Encode a result or chunk map: ``(map of bytes, encodings of non-JSON values)``."""
    out: dict[str, bytes] = {}
    encodings: dict[str, str] = {}
    for key, value in values.items():
        key = key if isinstance(key, str) else str(key)
        try:
            data, encoding = encode_value(value, threshold)
        except TypeError as exc:
            raise TypeError(f"result value {key!r}: {exc}") from None
        out[key] = data
        if encoding != JSON:
            encodings[key] = encoding
    return out, encodings


def decode_map(raw: Mapping[str, bytes], encodings: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Decode an args map; a value that cannot be decoded is an :class:`InvalidArgument` naming its key."""
    encodings = encodings or {}
    out: dict[str, Any] = {}
    for key, data in raw.items():
        encoding = encodings.get(key)
        try:
            out[key] = decode_value(data, encoding)
        except InvalidArgument:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the caller's bad input
            raise InvalidArgument(f"argument {key!r} cannot be decoded as {encoding}: {exc}") from None
    return out
