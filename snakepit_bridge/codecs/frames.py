"""The two payload codecs of the stdio protocol: JSON and MessagePack.

A codec (:data:`CODECS` by name) decodes a whole request frame, encodes one
value (a result or chunk map) to bytes, and builds a response frame around
already-encoded values (:class:`Encoded`) so that a result is encoded exactly
once, inside dispatch (where a failure becomes a clean error).

Values that JSON cannot carry, and how they travel (the same in results
and chunks):

* ``bytes``: MessagePack ``bin``. JSON: UTF-8 text if the bytes are valid
  UTF-8, else ``{"__base64__": "<standard base64>"}``.
* numpy arrays: lists in both codecs (an ext type would be refused by
  Elixir's Msgpax); numpy scalars as plain numbers.
* sets: lists; datetime/date/time: ISO 8601 text; UUIDs: text.
* MessagePack integers beyond 64 bits cannot be sent (a clean error); JSON
  sends them as written, and an incoming JSON frame keeps them exact (as the
  gRPC path does, via :func:`.values.loads_json`; orjson alone would make them
  floats). JSON has no NaN/infinity: they become ``null``.
* Map keys: as they are in MessagePack (an int key stays an int); JSON
  writes non-string keys as strings.

Incoming MessagePack: ``str`` becomes ``str`` and ``bin`` becomes ``bytes``.
Elixir's Msgpax packs every binary as ``str``, also one that is not UTF-8: such
a string arrives as ``bytes`` instead of failing the frame.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import re
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from .._lazy import lazy_module
from . import nesting
from .values import dumps_json, loads_json

if TYPE_CHECKING:
    import msgpack
else:
    msgpack = lazy_module("msgpack")  # on first use: a stdio worker answers the negotiation frame without it

__all__ = ["CODECS", "Codec", "Encoded", "JsonCodec", "MsgpackCodec", "PayloadError"]


# A frame is a map holding the args map: its arguments are two levels down
# (checked where a frame is decoded, as gRPC args are: :mod:`.nesting`).
_FRAME_DEPTH = nesting.MAX_DEPTH + 2


class PayloadError(ValueError):
    """A frame's payload does not decode."""


class Encoded:
    """A value already encoded by a codec, spliced into a frame as is."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _plain(obj: Any) -> Any:
    """What both codecs send for types neither handles natively (see module doc)."""
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":
        return obj.tolist()  # arrays, and scalars via .tolist() -> Python number
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    raise TypeError(f"values of type {type(obj).__name__} cannot be encoded")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"__base64__": base64.b64encode(data).decode("ascii")}
    return _plain(obj)


class Codec:
    """A payload encoding: ``name``, ``decode``, ``encode_value``, ``envelope``, ``recover_id``."""

    name = ""

    def decode(self, payload: bytes | bytearray) -> Any:
        raise NotImplementedError

    def encode_value(self, value: Any) -> bytes:
        raise NotImplementedError

    def envelope(self, fields: list[tuple[str, Any]]) -> bytes:
        """A map frame of ``fields`` in order; :class:`Encoded` values are spliced in."""
        raise NotImplementedError

    def answer(self, rid: Any, result: bytes, timestamp: str) -> bytes:
        """The success answer, ``envelope([("id", rid), ("success", True),
        ("result", Encoded(result)), ("timestamp", timestamp)])`` byte for
        byte, built with less work (every ping's answer). Raises what the
        codec raises for an ``rid`` it cannot encode (then use envelope)."""
        return self.envelope([("id", rid), ("success", True), ("result", Encoded(result)), ("timestamp", timestamp)])

    def recover_id(self, payload: bytes | bytearray) -> int | None:
        """Best effort: the top-level ``id`` of a frame that does not decode."""
        raise NotImplementedError


# Tokens of (possibly broken) JSON that matter for finding the top-level "id".
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]]')
_JSON_ID_VALUE = re.compile(rb"\s*:\s*(-?\d{1,19})(?![\d.eE])")


def _dumps(value: Any) -> bytes:
    """A plain envelope field as JSON; an id beyond 64 bits (orjson refuses it)
    is echoed exactly."""
    return dumps_json(value)


class JsonCodec(Codec):
    name = "json"

    def decode(self, payload: bytes | bytearray) -> Any:
        try:
            # Not orjson.loads: it turns integers beyond 64 bits into floats.
            obj = loads_json(payload)
        except ValueError as exc:  # orjson's and the standard library's decode errors
            raise PayloadError(f"invalid JSON: {exc}") from None
        return nesting.check_json(payload, obj, _FRAME_DEPTH, PayloadError)

    def encode_value(self, value: Any) -> bytes:
        # orjson, with integers beyond 64 bits spliced in exactly and very deep
        # nesting left to the standard library (a clear TypeError otherwise).
        return dumps_json(value, _json_default)

    def envelope(self, fields: list[tuple[str, Any]]) -> bytes:
        try:  # one orjson call, encoded values spliced in verbatim
            return orjson.dumps({key: orjson.Fragment(value.data) if type(value) is Encoded else value
                                 for key, value in fields})
        except orjson.JSONEncodeError:
            pass  # an id beyond 64 bits
        parts = []
        for key, value in fields:
            data = value.data if isinstance(value, Encoded) else _dumps(value)
            parts.append(b'"%s":%s' % (key.encode(), data))
        return b"{" + b",".join(parts) + b"}"

    def answer(self, rid: Any, result: bytes, timestamp: str) -> bytes:
        # orjson writes a map as {"key":value,...} with no spaces: the same bytes as envelope's.
        return b'{"id":%b,"success":true,"result":%b,"timestamp":%b}' % (orjson.dumps(rid), result,
                                                                          orjson.dumps(timestamp))

    def recover_id(self, payload: bytes | bytearray) -> int | None:
        depth = 0
        for match in _JSON_TOKENS.finditer(payload):
            token = match.group()
            if token in (b"{", b"["):
                depth += 1
            elif token in (b"}", b"]"):
                depth -= 1
            elif depth == 1 and token == b'"id"':
                value = _JSON_ID_VALUE.match(payload, match.end())
                if value:
                    return int(value.group(1))
        return None


class MsgpackCodec(Codec):
    name = "msgpack"

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def decode(self, payload: bytes | bytearray) -> Any:
        try:
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except UnicodeDecodeError:
            pass  # a str that is not UTF-8 (Msgpax sends binaries as str): keep it as bytes
        except Exception as exc:  # noqa: BLE001 - any unpacker failure is bad input
            # str(exc), not exc: an exception object is always truthy, and
            # some unpacker errors have an empty message.
            raise PayloadError(f"invalid MessagePack: {str(exc) or type(exc).__name__}") from None
        else:
            return nesting.check(obj, _FRAME_DEPTH, payload, PayloadError)
        try:
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=False, unicode_errors="surrogateescape")
        except Exception as exc:  # noqa: BLE001
            raise PayloadError(f"invalid MessagePack: {str(exc) or type(exc).__name__}") from None
        return _unescape(nesting.check(obj, _FRAME_DEPTH, payload, PayloadError))

    def encode_value(self, value: Any) -> bytes:
        return msgpack.packb(value, default=_plain, use_bin_type=True, datetime=False)

    def envelope(self, fields: list[tuple[str, Any]]) -> bytes:
        n = len(fields)
        parts = [bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")]
        pack = self._packer.pack
        for key, value in fields:
            parts.append(pack(key))
            parts.append(value.data if isinstance(value, Encoded) else pack(value))
        return b"".join(parts)

    def answer(self, rid: Any, result: bytes, timestamp: str) -> bytes:
        pack = self._packer.pack  # a 4-entry map; the keys as fixstr, True as 0xc3, as envelope packs them
        return b"".join((b"\x84\xa2id", pack(rid), b"\xa7success\xc3\xa6result", result, b"\xa9timestamp",
                         pack(timestamp)))

    def recover_id(self, payload: bytes | bytearray) -> int | None:
        unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=max(len(payload), 1))
        try:
            unpacker.feed(payload)
            for _ in range(unpacker.read_map_header()):
                key = unpacker.unpack()
                if key == b"id":
                    value = unpacker.unpack()
                    return value if isinstance(value, int) and not isinstance(value, bool) else None
                unpacker.skip()  # skips without decoding, so a broken str further on does not matter
        except Exception:  # noqa: BLE001 - best effort on a frame already known to be bad
            return None
        return None


def _unescape(obj: Any) -> Any:
    """Strings decoded with surrogateescape that were not UTF-8 become bytes again."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            return obj.encode("utf-8", "surrogateescape")
    if isinstance(obj, dict):
        return {_unescape(k): _unescape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unescape(v) for v in obj]
    return obj


CODECS: dict[str, type[Codec]] = {"json": JsonCodec, "msgpack": MsgpackCodec}
