"""The ``snakepit.SnakepitBridge`` gRPC service over the dispatch core.

Each RPC turns its request into a :class:`~snakepit_bridge.dispatch.Request`
(with the codecs passed in as ``decode``/``encode``), hands it to the
dispatcher, and turns results and chunks into protobuf messages. Nothing here
knows about handlers.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
import orjson

from .. import __version__, _malloc
from .._proc import CpuMeter, rss_bytes
from .._proto import snakepit_pb2 as pb
from .._proto import snakepit_pb2_grpc as pb_grpc
from ..codecs import accepted, decode_map, encode_map
from ..dispatch import OFFLOAD_BYTES, Dispatcher, Request, Result
from ..errors import ResourceExhausted
from ..registry import Kind

__all__ = ["BridgeServicer", "SERVICE_NAME", "message_size"]

SERVICE_NAME = "snakepit.SnakepitBridge"
WORKER_TYPE = "python-snakepit-bridge"


# Arguments up to this many wire bytes may be decoded on the spot for an
# inline command (bigger ones go through dispatch, which may use a thread).
_NOW_BYTES = 64 * 1024

# Bytes a response needs beyond its map entries and request id: the other
# fields (success, timestamp, chunk_index, a short error). Generous on purpose.
_FIXED_OVERHEAD = 1024
# Per map entry: entry tag and length, key tag and length, value tag and
# length (varints of at most 5 bytes each), rounded up.
_ENTRY_OVERHEAD = 16


def message_size(values: Mapping[str, bytes], encodings: Mapping[str, str]) -> int:
    """An upper bound on the serialized size of a response holding ``values``
    and ``encodings``, from lengths alone (``ByteSize()`` on upb serializes the
    whole message to count it: a full copy of a 100 MB result)."""
    size = _FIXED_OVERHEAD
    for key, data in values.items():
        size += len(key) + len(data) + _ENTRY_OVERHEAD
    for key, name in encodings.items():
        size += len(key) + len(name) + _ENTRY_OVERHEAD
    return size


def _raw_text(data: bytes) -> str:
    """An ``args["session_id"]`` sent without an arg encoding, as the text the
    caller held: Snakepit 0.3's Elixir client sends a string raw, so "1.5" or
    "1e3" are that session's name, not the JSON numbers they parse as (see
    :func:`~snakepit_bridge.sessions.session_name`). ``""`` (dispatch then
    names the session from the decoded value) for a JSON string (``"abc"``
    with its quotes is the session ``abc``, as it always was) and for bytes
    that are not UTF-8 (which dispatch refuses)."""
    if data[:1] == b'"':
        return ""
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError:
        return ""


#: Cost per map entry in the offload estimate: decoding a million tiny
#: arguments takes seconds though their values are a few bytes.
ENTRY_COST = 64
#: Maps with more entries than this are not summed (on the loop): their entry cost alone decides.
_SUM_ENTRIES = 4096


def _wire_size(args: Mapping[str, bytes]) -> int:
    """What decoding ``args`` costs, in wire bytes, for dispatch's offload
    decision: keys, values and ENTRY_COST per entry. O(1) for a big map."""
    n = len(args)
    if n > _SUM_ENTRIES:
        return n * ENTRY_COST
    return sum(len(k) + len(v) for k, v in args.items()) + n * ENTRY_COST


class BridgeServicer(pb_grpc.SnakepitBridgeServicer):
    """Serves the six Snakepit 0.3 RPCs and the generator additions."""

    def __init__(self, dispatcher: Dispatcher, generators: Any = None) -> None:
        self.dispatcher = dispatcher
        self.generators = generators
        self.threshold = dispatcher.config.binary_threshold
        # For requests that name no accept_encodings (Snakepit 0.3 never does).
        self.default_accept = accepted(dispatcher.config.default_accept_encodings)
        self.max_message_bytes = dispatcher.config.max_message_bytes
        self._cpu = CpuMeter()

    # -- the wire <-> Request ---------------------------------------------------------

    def _request(
        self,
        command: str,
        args: Mapping[str, bytes],
        arg_encodings: Mapping[str, str],
        timeout_ms: int,
        request_id: str,
        session_id: str,
        context: grpc.aio.ServicerContext,
        accept_encodings: Any = (),
    ) -> Request:
        remaining = context.time_remaining()
        # Every read of a protobuf bytes value copies it: a small map is read
        # once, here. A big one is not even copied on the loop (a million
        # entries took over a second): the copy is part of its decode, which
        # dispatch runs off the loop (len() of the map is O(1)). There it is a
        # comprehension, not dict(): dict() copies in C without ever letting
        # go of the GIL, so the loop would wait for it all the same.
        big = len(args) > _SUM_ENTRIES
        raw: Mapping[str, bytes] = args if big else dict(args)
        if not session_id and "session_id" in raw and "session_id" not in arg_encodings:
            session_id = _raw_text(raw["session_id"])
        if big:
            def decode(hints: Any = None) -> dict[str, Any]:
                # A comprehension, not dict(): it hands the GIL back while copying a huge map.
                return decode_map({k: v for k, v in args.items()}, arg_encodings, hints)
        else:
            def decode(hints: Any = None) -> dict[str, Any]:
                return decode_map(raw, arg_encodings, hints)
        return Request(
            command=command,
            args={},
            request_id=request_id,
            timeout_ms=timeout_ms,
            session_id=session_id,
            deadline=None if remaining is None else time.monotonic() + remaining,
            decode=decode,
            decode_size=_wire_size(raw),
            encode=self._encoder(request_id, accepted(accept_encodings) if accept_encodings else self.default_accept),
        )

    def _encoder(self, request_id: str, accept: frozenset[str]
                 ) -> Callable[[dict[str, Any]], tuple[dict[str, bytes], dict[str, str]]]:
        """Encodes a result or chunk map for a caller that accepts ``accept``
        (the one place a call's ``accept_encodings`` reaches the codecs: its
        results, stream chunks and pull-generator batches all come through
        here) and refuses one whose message would
        pass ``--max-message-mb``: gRPC would fail that send with an opaque
        status; this way the caller gets success=false (or a final error
        chunk) naming the limit, and dispatch counts and logs it."""

        def encode(values: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, str]]:
            out, encodings = encode_map(values, self.threshold, accept)
            size = message_size(out, encodings) + len(request_id)
            if size > OFFLOAD_BYTES:
                _malloc.large_message()  # copy large messages into reused memory (and give it back when idle)
            if size > self.max_message_bytes:
                raise ResourceExhausted(self._too_large(size, out))
            return out, encodings

        return encode

    def _too_large(self, size: int, out: Mapping[str, bytes]) -> str:
        biggest = max(out, key=lambda k: len(out[k]), default=None)
        mb = self.dispatcher.config.max_message_mb
        which = f" (value {biggest!r} is {len(out[biggest])} bytes)" if biggest is not None else ""
        return (
            f"result too large: {size} bytes encoded{which} "
            f"exceeds the message limit of {self.max_message_bytes} bytes ({mb} MB); "
            f"start the bridge with a larger --max-message-mb, or stream the value in parts"
        )

    @staticmethod
    def _response(result: Result, request_id: str) -> pb.ExecuteResponse:
        values, encodings = result.payload
        if encodings or result.error:
            return pb.ExecuteResponse(
                success=result.success, result=values, error=result.error,
                timestamp=time.time_ns(), request_id=request_id, encodings=encodings,
            )
        # The common answer: fields left unset cost nothing to build (same
        # message). The map is filled key by key: given to the constructor,
        # protobuf copies it through Python's MutableMapping.update (0.9 µs
        # against 1.4 µs for a ping's three values).
        response = pb.ExecuteResponse(success=result.success, timestamp=time.time_ns(), request_id=request_id)
        out = response.result
        for key, data in values.items():
            out[key] = data
        return response

    async def _stream(self, req: Request) -> AsyncIterator[pb.StreamResponse]:
        async with contextlib.aclosing(self.dispatcher.stream(req)) as chunks:
            async for chunk in chunks:
                values, encodings = chunk.payload
                yield pb.StreamResponse(
                    is_final=chunk.is_final, chunk=values, error=chunk.error,
                    timestamp=chunk.timestamp_ns, request_id=req.request_id,
                    chunk_index=chunk.index, encodings=encodings,
                )

    def _now(self, request: Any, session_id: str, context: grpc.aio.ServicerContext) -> Result | None:
        """An inline command's answer, computed now (``Dispatcher.call_now``):
        no task, no await, no thread, and no more per call than it needs (the
        arguments decoded at once, the deadline read only for a handler that
        takes a context). None when the call needs the full path (another
        kind of handler, a session, large arguments, or arguments that do not
        decode: ``call`` then reports that as usual)."""
        handler = self.dispatcher.registry.find(request.command)
        if handler is None or handler.kind is not Kind.INLINE or session_id:
            return None
        args: dict[str, Any] = {}
        if request.args:
            if len(request.args) > _SUM_ENTRIES:  # the full path copies it off the loop
                return None
            raw = dict(request.args)  # every read of a protobuf bytes value copies it: read each once
            if "session_id" in raw or _wire_size(raw) > _NOW_BYTES:
                return None
            try:
                # A declared str (bytes) parameter reads its wire bytes as text, as on the full path.
                hints = handler.params.wire_hints() if handler.params is not None else None
                args = decode_map(raw, request.arg_encodings, hints)
            except Exception:  # noqa: BLE001 - call() decodes again and reports it
                return None
        deadline = None
        if handler.takes_ctx:
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
        accept = request.accept_encodings
        req = Request(request.command, args, request.request_id, request.timeout_ms, "", deadline,
                      encode=self._encoder(request.request_id, accepted(accept) if accept else self.default_accept))
        return self.dispatcher.call_now(req, handler)

    async def _unary(self, request: Any, session_id: str, context: grpc.aio.ServicerContext,
                     result: Result | None = None) -> pb.ExecuteResponse:
        """Execute / ExecuteInSession, the full way (``result``: an answer ``_now`` already had)."""
        if result is None:
            req = self._request(request.command, request.args, request.arg_encodings, request.timeout_ms,
                                request.request_id, session_id, context, request.accept_encodings)
            result = await self.dispatcher.call(req)
        if result.code == "DEADLINE_EXCEEDED":
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, result.error)
        return self._response(result, request.request_id)

    # -- Snakepit 0.3 RPCs ------------------------------------------------------------

    async def Execute(self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext) -> pb.ExecuteResponse:
        result = self._now(request, "", context)
        if result is not None and result.code == "OK":  # answered: no more awaits on the way
            return self._response(result, request.request_id)
        return await self._unary(request, "", context, result)

    async def ExecuteInSession(self, request: pb.SessionRequest, context: grpc.aio.ServicerContext) -> pb.ExecuteResponse:
        return await self._unary(request, request.session_id, context,
                                 self._now(request, request.session_id, context))

    async def ExecuteStream(self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamResponse]:
        req = self._request(request.command, request.args, request.arg_encodings,
                            request.timeout_ms, request.request_id, "", context, request.accept_encodings)
        async for response in self._stream(req):
            yield response

    async def ExecuteInSessionStream(self, request: pb.SessionRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamResponse]:
        req = self._request(request.command, request.args, request.arg_encodings,
                            request.timeout_ms, request.request_id, request.session_id, context,
                            request.accept_encodings)
        async for response in self._stream(req):
            yield response

    async def Health(self, request: pb.HealthRequest, context: grpc.aio.ServicerContext) -> pb.HealthResponse:
        d = self.dispatcher
        return pb.HealthResponse(
            healthy=not d.closing,
            worker_id=request.worker_id or d.config.worker_id,
            uptime_ms=d.stats.uptime_ms,
            total_requests=d.stats.requests,
            total_errors=d.stats.errors,
            version=__version__,
        )

    async def GetInfo(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        import platform  # here: ~2 ms of start-up for a call a pool makes rarely

        d = self.dispatcher
        response = pb.InfoResponse(
            worker_type=WORKER_TYPE,
            version=__version__,
            supported_commands=d.registry.names(),
            system_info={
                "python_version": platform.python_version(),
                "platform": platform.platform(),
                "hostname": socket.gethostname(),
                "pid": str(os.getpid()),
                "grpc_version": grpc.__version__,
                "executable": sys.executable,
            },
        )
        if request.include_capabilities:
            response.capabilities.update(self.capabilities())
        if request.include_stats:
            response.stats.CopyFrom(self.worker_stats())
        return response

    def capabilities(self) -> dict[str, str]:
        d = self.dispatcher
        streaming = sorted(h.name for h in d.registry if h.streaming)
        return {
            "streaming": "true",
            "streaming_commands": ",".join(streaming),
            "sessions": "true",
            "generators": "true" if self.generators is not None else "false",
            "binary_encodings": "npy,raw,utf8,msgpack",
            "accept_encodings": "true",
            "default_accept_encodings": ",".join(sorted(self.default_accept)),
            "binary_threshold": str(d.config.binary_threshold),
            "max_message_bytes": str(d.config.max_message_bytes),
            "arg_encodings": "true",
        }

    async def Describe(self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext) -> pb.DescribeResponse:
        """Addition: what each command takes. Unknown names are listed in ``error``;
        the known ones are still described. Schemas are built in a worker thread
        (the first one imports the validation library)."""
        registry = self.dispatcher.registry
        names = list(request.commands) or registry.names()
        handlers = [h for h in map(registry.find, names) if h is not None]
        unknown = [n for n in names if n not in registry]

        def describe() -> list[dict[str, Any]]:
            return [h.describe() for h in handlers]

        try:
            described = await asyncio.get_running_loop().run_in_executor(self.dispatcher.executor, describe)
        except Exception as exc:  # noqa: BLE001 - a declaration msgspec cannot take: say so, keep serving
            _, message, _ = self.dispatcher.failure(exc, Request("Describe", {}))
            return pb.DescribeResponse(error=message)
        response = pb.DescribeResponse(error=f"unknown command(s): {', '.join(map(repr, unknown))}" if unknown else "")
        for d in described:
            response.commands.add(name=d["name"], streaming=d["streaming"], doc=d["doc"], typed=d["typed"],
                                  params_schema=orjson.dumps(d["params_schema"]).decode())
        return response

    def worker_stats(self) -> pb.WorkerStats:
        d = self.dispatcher
        return pb.WorkerStats(
            requests_handled=d.stats.requests,
            requests_failed=d.stats.errors,
            uptime_ms=d.stats.uptime_ms,
            memory_usage_bytes=rss_bytes(),
            cpu_usage_percent=self._cpu.percent(),
            active_sessions=len(d.sessions),
            active_streams=d.stats.active_streams,
        )

    # -- Additions: pull-based generators (see snakepit_bridge.generators) -------------

    async def InitGenerator(self, request: pb.InitGeneratorRequest, context: grpc.aio.ServicerContext) -> pb.InitGeneratorResponse:
        if self.generators is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "generators are not enabled")
        req = self._request(request.command, request.args, request.arg_encodings,
                            request.timeout_ms, request.request_id, request.session_id, context,
                            request.accept_encodings)
        req.deadline = None  # the RPC's own deadline bounds this call, not the generator
        generator_id, error = await self.generators.open(req)
        return pb.InitGeneratorResponse(generator_id=generator_id, error=error)

    async def GetNextBatch(self, request: pb.GetNextBatchRequest, context: grpc.aio.ServicerContext) -> pb.GetNextBatchResponse:
        if self.generators is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "generators are not enabled")
        chunks, has_more, error = await self.generators.next_batch(request.generator_id, request.batch_size)
        size = sum(message_size(*chunk.payload) + len(request.generator_id) for chunk in chunks)
        if size > self.max_message_bytes:
            # Each chunk fit on its own (the encoder checked); the batch does not.
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"batch of {len(chunks)} chunks is {size} bytes, over the message limit of "
                f"{self.max_message_bytes} bytes (--max-message-mb); ask for a smaller batch_size"))
        response = pb.GetNextBatchResponse(has_more=has_more, error=error)
        for chunk in chunks:
            values, encodings = chunk.payload
            response.chunks.add(
                is_final=chunk.is_final, chunk=values, error=chunk.error, timestamp=chunk.timestamp_ns,
                request_id=request.generator_id, chunk_index=chunk.index, encodings=encodings,
            )
        return response

    async def CloseGenerator(self, request: pb.CloseGeneratorRequest, context: grpc.aio.ServicerContext) -> pb.CloseGeneratorResponse:
        if self.generators is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "generators are not enabled")
        error = await self.generators.close(request.generator_id)
        return pb.CloseGeneratorResponse(error=error)
