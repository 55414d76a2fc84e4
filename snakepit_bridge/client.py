"""A small typed client for the bridge: tests, benchmarks and debugging.

    with Client("127.0.0.1:50051") as c:
        c.execute("ping").result
        for chunk in c.stream("ping_stream", {"count": 3}):
            print(chunk.data)

From a shell::

    python -m snakepit_bridge.client --port 50051 call ping '{"a": 1}'
    python -m snakepit_bridge.client --port 50051 stream ping_stream '{"count": 3}'

Arguments are sent unambiguously: strings as ``utf8``, bytes as ``raw``,
numpy arrays as ``npy``, everything else by the bridge's own rules (:func:`~snakepit_bridge.codecs.encode_value`:
JSON up to the 10 KB threshold, then npy / MessagePack), each named in
``arg_encodings``. Every request asks for every binary encoding
(``accept_encodings``), so large values come back as npy / MessagePack /
UTF-8. Results are decoded with the response's ``encodings`` map,
and values without an entry as the Elixir client does (JSON, else the raw
bytes). Decoded npy arrays are read-only views over the received bytes.

``elixir_style=True`` behaves as Snakepit 0.3's Elixir client: arguments go
as it sends them (strings and bytes raw, the rest JSON, no ``arg_encodings``,
no ``accept_encodings``, so every value but bytes comes back JSON) and results are decoded ignoring ``encodings`` (JSON, else the raw bytes), so
binary values arrive as ``bytes``. ``Response.encodings`` still shows the map.

The default message limit (``max_message_mb=100``) matches the bridge's
``--max-message-mb`` default, both ways.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson

from ._proto import snakepit_pb2 as pb
from ._proto import snakepit_pb2_grpc as pb_grpc
from .codecs import BINARY_ENCODINGS, decode_value, encode_value
from .codecs.npy import is_ndarray
from .codecs.values import loads_json

__all__ = ["Client", "Response", "StreamChunk", "encode_args", "decode_values"]


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


def encode_args(args: Mapping[str, Any] | None, *, elixir_style: bool = False,
                threshold: int = 10_240) -> tuple[dict[str, bytes], dict[str, str]]:
    """``(args map, arg_encodings)`` for a request."""
    out: dict[str, bytes] = {}
    encodings: dict[str, str] = {}
    for key, value in (args or {}).items():
        if elixir_style:
            out[key] = value.encode() if isinstance(value, str) else (
                bytes(value) if isinstance(value, (bytes, bytearray)) else orjson.dumps(value))
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


class Client:
    """Blocking client over one channel. Thread-safe like a grpc channel."""

    def __init__(self, target: str = "127.0.0.1:50051", *, token: str | None = None,
                 max_message_mb: int = 100, credentials: grpc.ChannelCredentials | None = None,
                 elixir_style: bool = False) -> None:
        limit = max_message_mb * 1024 * 1024
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        self.channel = (grpc.secure_channel(target, credentials, options) if credentials
                        else grpc.insecure_channel(target, options))
        self.stub = pb_grpc.SnakepitBridgeStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.elixir_style = elixir_style
        # Every binary encoding unless acting as Snakepit 0.3 (which asks for none: JSON everything).
        self.accept = () if elixir_style else BINARY_ENCODINGS

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float = 5.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    # -- calls -------------------------------------------------------------------------

    def _args(self, args: Mapping[str, Any] | None) -> tuple[dict[str, bytes], dict[str, str]]:
        return encode_args(args, elixir_style=self.elixir_style)

    def execute(self, command: str, args: Mapping[str, Any] | None = None, *, timeout_ms: int = 0,
                request_id: str | None = None, timeout: float | None = None) -> Response:
        raw, enc = self._args(args)
        request = pb.ExecuteRequest(command=command, args=raw, arg_encodings=enc, timeout_ms=timeout_ms,
                                    request_id=request_id or uuid.uuid4().hex, accept_encodings=self.accept)
        return _response(self.stub.Execute(request, timeout=timeout, metadata=self.metadata), self.elixir_style)

    def execute_in_session(self, session_id: str, command: str, args: Mapping[str, Any] | None = None, *,
                           timeout_ms: int = 0, request_id: str | None = None,
                           timeout: float | None = None) -> Response:
        raw, enc = self._args(args)
        request = pb.SessionRequest(session_id=session_id, command=command, args=raw, arg_encodings=enc,
                                    timeout_ms=timeout_ms, request_id=request_id or uuid.uuid4().hex,
                                    accept_encodings=self.accept)
        return _response(self.stub.ExecuteInSession(request, timeout=timeout, metadata=self.metadata), self.elixir_style)

    def stream(self, command: str, args: Mapping[str, Any] | None = None, *, timeout_ms: int = 0,
               request_id: str | None = None, timeout: float | None = None,
               session_id: str | None = None) -> Iterator[StreamChunk]:
        """Chunks as they arrive. Closing the iterator (or leaving a ``for``
        loop early and dropping it) cancels the call."""
        raw, enc = self._args(args)
        rid = request_id or uuid.uuid4().hex
        if session_id is None:
            call = self.stub.ExecuteStream(
                pb.ExecuteRequest(command=command, args=raw, arg_encodings=enc, timeout_ms=timeout_ms, request_id=rid,
                                  accept_encodings=self.accept),
                timeout=timeout, metadata=self.metadata)
        else:
            call = self.stub.ExecuteInSessionStream(
                pb.SessionRequest(session_id=session_id, command=command, args=raw, arg_encodings=enc,
                                  timeout_ms=timeout_ms, request_id=rid, accept_encodings=self.accept),
                timeout=timeout, metadata=self.metadata)
        return _Stream(call, self.elixir_style)

    def health(self, worker_id: str = "", timeout: float | None = None) -> pb.HealthResponse:
        return self.stub.Health(pb.HealthRequest(worker_id=worker_id), timeout=timeout, metadata=self.metadata)

    def info(self, capabilities: bool = True, stats: bool = True, timeout: float | None = None) -> pb.InfoResponse:
        return self.stub.GetInfo(pb.InfoRequest(include_capabilities=capabilities, include_stats=stats),
                                 timeout=timeout, metadata=self.metadata)

    # -- pull-based generators -----------------------------------------------------------

    def init_generator(self, command: str, args: Mapping[str, Any] | None = None, *,
                       session_id: str = "", timeout_ms: int = 0) -> pb.InitGeneratorResponse:
        raw, enc = self._args(args)
        return self.stub.InitGenerator(pb.InitGeneratorRequest(
            command=command, args=raw, arg_encodings=enc, session_id=session_id, timeout_ms=timeout_ms,
            request_id=uuid.uuid4().hex, accept_encodings=self.accept), metadata=self.metadata)

    def next_batch(self, generator_id: str, batch_size: int = 10) -> tuple[list[StreamChunk], bool, str]:
        r = self.stub.GetNextBatch(pb.GetNextBatchRequest(generator_id=generator_id, batch_size=batch_size),
                                   metadata=self.metadata)
        return [_chunk(c, self.elixir_style) for c in r.chunks], r.has_more, r.error

    def close_generator(self, generator_id: str) -> str:
        return self.stub.CloseGenerator(pb.CloseGeneratorRequest(generator_id=generator_id),
                                        metadata=self.metadata).error


class _Stream:
    """Iterator over a server stream that cancels the call when closed."""

    def __init__(self, call: Any, elixir_style: bool = False) -> None:
        self.call = call
        self.elixir_style = elixir_style
        # Every binary encoding unless acting as Snakepit 0.3 (which asks for none: JSON everything).
        self.accept = () if elixir_style else BINARY_ENCODINGS

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> StreamChunk:
        return _chunk(next(self.call), self.elixir_style)

    def cancel(self) -> None:
        self.call.cancel()

    close = cancel

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        self.call.cancel()


# Each read of a protobuf bytes field copies it out of the message: read the
# map once into a dict and decode from that (npy values then view those bytes).

def _response(r: pb.ExecuteResponse, elixir_style: bool = False) -> Response:
    raw, encodings = dict(r.result), dict(r.encodings)
    return Response(r.success, decode_values(raw, {} if elixir_style else encodings), r.error, r.request_id,
                    r.timestamp, encodings, raw)


def _chunk(c: pb.StreamResponse, elixir_style: bool = False) -> StreamChunk:
    raw, encodings = dict(c.chunk), dict(c.encodings)
    return StreamChunk(decode_values(raw, {} if elixir_style else encodings), c.is_final, c.error, c.chunk_index,
                       c.request_id, c.timestamp, encodings, raw)


def _show(value: Any) -> str:
    return orjson.dumps(value, default=lambda o: o.decode("latin-1") if isinstance(o, bytes) else str(o),
                        option=orjson.OPT_SERIALIZE_NUMPY).decode()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m snakepit_bridge.client", description="Call a running bridge.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--token", help="bearer token, if the bridge requires one")
    p.add_argument("--session", help="session id to call in")
    p.add_argument("--timeout-ms", type=int, default=0)
    sub = p.add_subparsers(dest="verb", required=True)
    for verb in ("call", "stream"):
        s = sub.add_parser(verb)
        s.add_argument("command")
        s.add_argument("args", nargs="?", default="{}", help="arguments as a JSON object")
    sub.add_parser("health")
    sub.add_parser("info")
    ns = p.parse_args(argv)
    with Client(f"{ns.host}:{ns.port}", token=ns.token) as client:
        try:
            if ns.verb == "health":
                h = client.health()
                print(_show({"healthy": h.healthy, "uptime_ms": h.uptime_ms, "total_requests": h.total_requests,
                             "total_errors": h.total_errors, "version": h.version}))
                return 0
            if ns.verb == "info":
                i = client.info()
                print(_show({"worker_type": i.worker_type, "version": i.version,
                             "supported_commands": list(i.supported_commands),
                             "capabilities": dict(i.capabilities)}))
                return 0
            args = orjson.loads(ns.args)
            if ns.verb == "call":
                r = (client.execute_in_session(ns.session, ns.command, args, timeout_ms=ns.timeout_ms) if ns.session
                     else client.execute(ns.command, args, timeout_ms=ns.timeout_ms))
                print(_show({"success": r.success, "result": r.result, "error": r.error}))
                return 0 if r.success else 1
            failed = False
            for chunk in client.stream(ns.command, args, timeout_ms=ns.timeout_ms, session_id=ns.session):
                print(_show({"index": chunk.index, "is_final": chunk.is_final, "error": chunk.error, "data": chunk.data}),
                      flush=True)
                failed = failed or bool(chunk.is_final and chunk.error)
            return 1 if failed else 0
        except grpc.RpcError as exc:
            sys.stderr.write(f"{exc.code().name}: {exc.details()}\n")
            return 2


if __name__ == "__main__":
    sys.exit(main())
