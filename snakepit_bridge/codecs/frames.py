"""Whole-frame JSON and MessagePack for the stdio transport (CONTRACT.md §4).

On stdio a response is ONE document (``{"id", "success", "result", ...}``),
so values cannot carry their own encoding as on gRPC. The rules:

* MessagePack frames (:func:`dumps_msgpack`): str as str, bytes as bin (at
  any size), numpy arrays as nested lists (``tolist()``; Elixir's Msgpax has no
  npy), numpy scalars as numbers, sets/tuples as lists, NaN/inf as floats.
  Ints beyond 64 bits cannot travel: ``TypeError`` naming the problem.
* JSON frames (:func:`dumps_json`): as :func:`~snakepit_bridge.codecs.values.encode_value`'s
  JSON (NaN/inf become null, ints of any size travel, numpy arrays become
  lists), plus bytes: valid UTF-8 travels as a string, anything else is a
  ``TypeError`` that says to use ``--protocol msgpack``: JSON has no bytes,
  and a silent base64 would reach Elixir as a different string.
* Object-dtype numpy values are refused both ways (pickle).

Decoding (:func:`loads_msgpack`, :func:`loads_json`) never runs code: plain
maps, lists, strings, numbers, bytes. Both raise ``ValueError`` on bad data.
"""
from __future__ import annotations

import json
from typing import Any

import msgpack
import orjson

from . import values

__all__ = ["dumps_json", "dumps_msgpack", "loads_json", "loads_msgpack", "json_safe"]


def _frame_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        try:
            return str(obj, "utf-8")
        except UnicodeDecodeError:
            raise TypeError(
                f"{len(obj)} bytes that are not UTF-8 cannot travel in a JSON frame; use --protocol msgpack"
            ) from None
    return values._json_default(obj)


def dumps_json(obj: Any) -> bytes:
    """One JSON frame body (see the module docstring); ``TypeError`` if impossible."""
    try:
        return orjson.dumps(obj, default=_frame_default, option=values._JSON_OPTS)
    except TypeError as exc:
        reason = str(exc.__cause__ or exc)  # orjson wraps our default's error; its message says why
        if "64-bit" not in reason:
            raise TypeError(reason) from None
    # An int beyond 64 bits: orjson refuses, the stdlib writes it.
    return json.dumps(json_safe(obj), separators=(",", ":"), ensure_ascii=False,
                             allow_nan=False).encode()


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON-able Python (dicts, lists, str, numbers, None),
    by the rules of :func:`dumps_json`."""
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float):
        return values._finite(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return json_safe(_frame_default(obj))


def dumps_msgpack(obj: Any) -> bytes:
    """One MessagePack frame body (see the module docstring); ``TypeError`` if impossible."""
    try:
        return msgpack.packb(obj, default=values._msgpack_default, use_bin_type=True)
    except OverflowError as exc:
        raise TypeError(f"MessagePack cannot carry an int beyond 64 bits ({exc}); send it as a string") from None


def loads_json(data: bytes) -> Any:
    try:
        return values.loads_json(data)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def loads_msgpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ValueError(f"not MessagePack ({type(exc).__name__}: {exc})") from None
