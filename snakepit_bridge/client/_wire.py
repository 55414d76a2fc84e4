"""What the blocking and the asyncio client share: the request messages (built
in one place, :func:`build_request`), argument encoding, result decoding, and
the bookkeeping of a pulled generator (:class:`PullState`). No I/O here.

Arguments are sent unambiguously: strings as ``utf8``, bytes as ``raw``,
numpy arrays as ``npy``, everything else by the bridge's own rules
(:func:`~snakepit_bridge.codecs.encode_value`: JSON up to the 10 KB threshold,
then npy / MessagePack), each named in ``arg_encodings``. Requests list the
binary encodings this client decodes in ``accept_encodings``. Results are
decoded with the response's ``encodings`` map, and values without an entry as
the Elixir client does (JSON, else the raw bytes). Decoded npy arrays are
read-only views over the received bytes.

``elixir_style=True`` behaves as Snakepit 0.3's Elixir client: arguments go as
it sends them (strings and bytes raw, the rest JSON, no ``arg_encodings``), no
``accept_encodings``, and results are decoded ignoring ``encodings`` (JSON,
else the raw bytes), so binary values arrive as ``bytes``.
``Response.encodings`` still shows the map.
"""
from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .._proto import snakepit_pb2 as pb
from ..codecs import decode_value, encode_value
from ..codecs.npy import is_ndarray
from ..codecs.values import dumps_json, loads_json

__all__ = [
    "ACCEPT_ENCODINGS", "ClientError", "CommandDescription", "GeneratorError", "PullState", "Response",
    "StreamChunk", "accepted", "build_request", "channel_options", "chunk", "decode_values", "descriptions",
    "encode_args", "response",
]

#: The binary encodings this client decodes; sent in ``accept_encodings`` unless ``elixir_style``.
ACCEPT_ENCODINGS = ("npy", "raw", "utf8", "msgpack")
#: How long closing a generator may take before the client gives up on it (the
#: bridge's reaper closes it at its TTL anyway).
CLOSE_TIMEOUT = 5.0


class ClientError(RuntimeError):
    """A call the bridge answered with an error of the request itself."""


class GeneratorError(ClientError):
    """A pulled generator could not be opened, or a batch of it failed (unknown,
    expired or closed generator, transport error). Names the generator."""

    def __init__(self, message: str, *, command: str = "", generator_id: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.generator_id = generator_id


@dataclass
class Response:
    success: bool
    result: dict[str, Any]
    error: str
    request_id: str
    timestamp: int
    encodings: dict[str, str] = field(default_factory=dict)
    raw: dict[str, bytes] = field(default_factory=dict, repr=False)


@dataclass
class StreamChunk:
    data: dict[str, Any]
    is_final: bool
    error: str
    index: int
    request_id: str
    timestamp: int
    encodings: dict[str, str] = field(default_factory=dict)
    raw: dict[str, bytes] = field(default_factory=dict, repr=False)


@dataclass
class CommandDescription:
    """One command as the bridge's Describe RPC reports it."""

    name: str
    streaming: bool
    doc: str
    params_schema: dict[str, Any]  # JSON Schema of the args map; {} when untyped
    typed: bool


def channel_options(max_message_mb: int) -> list[tuple[str, int]]:
    limit = max_message_mb * 1024 * 1024
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


def encode_args(args: Mapping[str, Any] | None, *, elixir_style: bool = False,
                threshold: int = 10_240) -> tuple[dict[str, bytes], dict[str, str]]:
    """``(args map, arg_encodings)`` for a request."""
    out: dict[str, bytes] = {}
    encodings: dict[str, str] = {}
    for key, value in (args or {}).items():
        if elixir_style:
            # As Jason encodes it: ints of any length exact, numpy arrays as lists.
            out[key] = value.encode() if isinstance(value, str) else (
                bytes(value) if isinstance(value, (bytes, bytearray)) else dumps_json(value))
            continue
        if isinstance(value, str):
            out[key], encodings[key] = value.encode(), "utf8"
            continue
        # Arrays always go as npy, so a handler gets an array (with its dtype) at any size.
        data, encoding = encode_value(value, 0 if is_ndarray(value) else threshold)
        out[key] = data
        encodings[key] = encoding
    return out, encodings


def decode_values(raw: Mapping[str, bytes], encodings: Mapping[str, str]) -> dict[str, Any]:
    """Decode a result or chunk map as a client should: a value named in
    ``encodings`` by that encoding, any other as the Elixir client does (JSON,
    else the raw bytes). Pass ``{}`` as ``encodings`` to decode exactly as
    Snakepit 0.3 does."""
    out: dict[str, Any] = {}
    for key, data in raw.items():
        encoding = encodings.get(key)
        if encoding:
            out[key] = decode_value(data, encoding)
        else:
            try:
                out[key] = loads_json(data)
            except ValueError:
                out[key] = bytes(data)  # what the Elixir client does: keep the binary
    return out


def accepted(elixir_style: bool, accept: Sequence[str] | None = None) -> list[str]:
    """``accept_encodings`` for a request: ``accept`` if given, else every binary
    encoding this client decodes, or none for an Elixir-style client."""
    if accept is not None:
        return list(accept)
    return [] if elixir_style else list(ACCEPT_ENCODINGS)


def build_request(kind: str, command: str, args: Mapping[str, Any] | None, *, elixir_style: bool = False,
                  accept: Sequence[str] | None = None, session_id: str | None = None, timeout_ms: int = 0,
                  request_id: str | None = None) -> pb.ExecuteRequest | pb.SessionRequest | pb.InitGeneratorRequest:
    """The one place a request carrying a command is built, for both clients.

    ``kind`` is ``"call"`` (an ExecuteRequest, or a SessionRequest when
    ``session_id`` is not None) or ``"generator"`` (an InitGeneratorRequest).
    """
    raw, enc = encode_args(args, elixir_style=elixir_style)
    common: dict[str, Any] = {
        "command": command, "args": raw, "arg_encodings": enc, "timeout_ms": timeout_ms,
        "request_id": request_id or uuid.uuid4().hex, "accept_encodings": accepted(elixir_style, accept),
    }
    if kind == "generator":
        return pb.InitGeneratorRequest(session_id=session_id or "", **common)
    if kind != "call":
        raise ValueError(f"unknown request kind {kind!r}")
    if session_id is None:
        return pb.ExecuteRequest(**common)
    return pb.SessionRequest(session_id=session_id, **common)


# Each read of a protobuf bytes field copies it out of the message: read the
# map once into a dict and decode from that (npy values then view those bytes).

def response(r: pb.ExecuteResponse, elixir_style: bool = False) -> Response:
    raw, encodings = dict(r.result), dict(r.encodings)
    return Response(r.success, decode_values(raw, {} if elixir_style else encodings), r.error, r.request_id,
                    r.timestamp, encodings, raw)


def chunk(c: pb.StreamResponse, elixir_style: bool = False) -> StreamChunk:
    raw, encodings = dict(c.chunk), dict(c.encodings)
    return StreamChunk(decode_values(raw, {} if elixir_style else encodings), c.is_final, c.error, c.chunk_index,
                       c.request_id, c.timestamp, encodings, raw)


def descriptions(r: pb.DescribeResponse) -> list[CommandDescription]:
    """The parsed command descriptions; :class:`ClientError` if the bridge refused."""
    if r.error:
        raise ClientError(f"describe failed: {r.error}")
    return [CommandDescription(d.name, d.streaming, d.doc, orjson.loads(d.params_schema or "{}"), d.typed)
            for d in r.commands]


class PullState:
    """The client's side of one pulled generator, without I/O: the chunks of the
    current batch, whether more may come, and the errors that end it. The sync
    and async iterators drive it with their own calls."""

    __slots__ = ("command", "batch_size", "elixir_style", "generator_id", "buffer", "more", "closed")

    def __init__(self, command: str, batch_size: int, elixir_style: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.command = command
        self.batch_size = batch_size
        self.elixir_style = elixir_style
        self.generator_id = ""
        self.buffer: deque[pb.StreamResponse] = deque()
        self.more = True  # False once the final chunk arrived or the generator is gone
        self.closed = False  # close() was called (or the pull failed)

    def opened(self, r: pb.InitGeneratorResponse) -> None:
        if r.error or not r.generator_id:
            self.more, self.closed = False, True
            raise GeneratorError(f"could not open a generator for {self.command!r}: {r.error or 'no id returned'}",
                                 command=self.command)
        self.generator_id = r.generator_id

    def batch_request(self) -> pb.GetNextBatchRequest:
        return pb.GetNextBatchRequest(generator_id=self.generator_id, batch_size=self.batch_size)

    def close_request(self) -> pb.CloseGeneratorRequest:
        return pb.CloseGeneratorRequest(generator_id=self.generator_id)

    def accept(self, r: pb.GetNextBatchResponse) -> None:
        """Take a batch; :class:`GeneratorError` if the bridge refused it (the
        generator is then gone on its side)."""
        if r.error:
            self.more, self.closed = False, True
            raise self.error(r.error)
        self.buffer.extend(r.chunks)
        self.more = r.has_more

    def error(self, why: str) -> GeneratorError:
        return GeneratorError(f"pulling {self.command!r} from generator {self.generator_id}: {why}",
                              command=self.command, generator_id=self.generator_id)

    @property
    def needs_close(self) -> bool:
        """Whether the bridge still holds the generator (it forgets a finished one itself)."""
        return bool(self.generator_id) and self.more

    def end(self) -> bool:
        """End the iteration (idempotent); True when the bridge-side generator
        still needs a CloseGenerator, which the caller sends its own way."""
        if self.closed:
            return False
        need = self.needs_close
        self.closed = True
        self.buffer.clear()
        return need

    def pop(self) -> StreamChunk:
        return chunk(self.buffer.popleft(), self.elixir_style)
