"""Length-prefixed frames on file descriptors, and the two payload codecs.

Framing (Erlang's ``{:packet, 4}``): every frame is a 4-byte big-endian
unsigned length followed by that many payload bytes, in both directions.

:class:`FrameReader` and :class:`FrameWriter` never block the event loop: on a
pipe, socket or terminal they use asyncio's pipe transports; on anything else
(a regular file, ``/dev/null``) blocking I/O runs in one private thread.
Both are bounded: the reader refuses a declared length above its limit before
reading the payload (:class:`FrameTooLarge`) and reads no further ahead than a
small buffer; the writer's :meth:`FrameWriter.write` waits while the pipe's
buffer is above its high-water mark, so a slow reader slows the producers.

Codecs (:data:`CODECS`): a codec decodes a whole request frame, encodes one
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
  sends them as written. JSON has no NaN/infinity: they become ``null``.
* Map keys: as they are in MessagePack (an int key stays an int); JSON
  writes non-string keys as strings.

Incoming MessagePack: ``str`` becomes ``str`` and ``bin`` becomes ``bytes``.
Elixir's Msgpax packs every binary as ``str``, also one that is not UTF-8: such
a string arrives as ``bytes`` instead of failing the frame.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import enum
import json
import os
import re
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import msgpack
import orjson

__all__ = [
    "CODECS", "Codec", "Encoded", "FrameReader", "FrameTooLarge", "FrameWriter",
    "JsonCodec", "MsgpackCodec", "PayloadError", "TruncatedFrame", "frame",
]

HEADER = 4
#: Frames up to this size are written with one write (header and payload
#: joined); above it the payload is written as is, to avoid copying it.
JOIN_LIMIT = 64 * 1024
#: How far the reader may read ahead of the frame being parsed.
READ_AHEAD = 256 * 1024
#: The writer waits for the pipe to drain above this many buffered bytes.
WRITE_HIGH_WATER = 256 * 1024
#: Pipe capacity asked for (Linux F_SETPIPE_SZ; the default 64 KiB costs a
#: context switch per 64 KiB of a large frame). Best effort.
PIPE_SIZE = 1 << 20


class FrameTooLarge(Exception):
    """A frame declared more bytes than allowed; the stream cannot be resynchronized."""

    def __init__(self, declared: int, limit: int) -> None:
        super().__init__(f"frame declares {declared} bytes; the limit is {limit} bytes")
        self.declared = declared
        self.limit = limit


class TruncatedFrame(Exception):
    """EOF in the middle of a frame."""


class PayloadError(ValueError):
    """A frame's payload does not decode."""


def frame(payload: bytes) -> bytes:
    """``payload`` with its 4-byte big-endian length header."""
    return len(payload).to_bytes(HEADER, "big") + payload


# -- reading ------------------------------------------------------------------------


class _Source(Protocol):
    async def readexactly(self, n: int) -> bytes: ...


class _ThreadSource:
    """Blocking reads in a private thread, for fds asyncio cannot poll."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="snakepit-stdin")

    async def readexactly(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        while len(self.buffer) < n and not self.eof:
            want = min(max(n - len(self.buffer), 65536), 1 << 20)
            data = await loop.run_in_executor(self.pool, os.read, self.fd, want)
            if data:
                self.buffer += data
            else:
                self.eof = True
        if len(self.buffer) < n:
            partial = bytes(self.buffer)
            self.buffer.clear()
            raise asyncio.IncompleteReadError(partial, n)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


class FrameReader:
    """Reads frames from a file descriptor (which it then owns)."""

    def __init__(self, source: _Source, limit: int, transport: asyncio.BaseTransport | None = None) -> None:
        self._source = source
        self.limit = limit
        self._transport = transport

    @classmethod
    async def open(cls, fd: int, limit: int) -> FrameReader:
        if _pollable(fd):
            _grow_pipe(fd)
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=READ_AHEAD // 2, loop=loop)
            pipe = os.fdopen(fd, "rb", buffering=0)
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
            return cls(reader, limit, transport)
        return cls(_ThreadSource(fd), limit)

    async def read(self) -> bytes | None:
        """The next frame's payload; None at EOF between frames.

        Raises :class:`FrameTooLarge` (before reading the payload) and
        :class:`TruncatedFrame` (EOF inside a frame).
        """
        try:
            header = await self._source.readexactly(HEADER)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise TruncatedFrame(f"EOF inside a frame header ({len(exc.partial)} of {HEADER} bytes)") from None
        size = int.from_bytes(header, "big")
        if size > self.limit:
            raise FrameTooLarge(size, self.limit)
        try:
            return await self._source.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise TruncatedFrame(f"EOF after {len(exc.partial)} of {size} payload bytes") from None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        elif isinstance(self._source, _ThreadSource):
            self._source.pool.shutdown(wait=False, cancel_futures=True)


# -- writing ------------------------------------------------------------------------


class _WriteProtocol(asyncio.Protocol):
    """Flow control for a write pipe: ``drain()`` waits while it is paused."""

    def __init__(self) -> None:
        self.paused = False
        self.lost: BaseException | None = None
        self.waiters: list[asyncio.Future[None]] = []
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or BrokenPipeError("stdout is closed")
        self._wake()
        if not self.closed.done():
            self.closed.set_result(None)

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def drain(self) -> None:
        while self.paused and self.lost is None:
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            await fut


class FrameWriter:
    """Writes frames to a file descriptor (which it then owns).

    A frame goes into the transport in one step, without awaiting in
    between, so frames from concurrent tasks never interleave.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._transport: asyncio.WriteTransport | None = None
        self._protocol: _WriteProtocol | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._turn = asyncio.Lock()
        self.broken = False

    @classmethod
    async def open(cls, fd: int) -> FrameWriter:
        writer = cls(fd)
        if _pollable(fd):
            _grow_pipe(fd)
            loop = asyncio.get_running_loop()
            pipe = os.fdopen(fd, "wb", buffering=0)
            transport, protocol = await loop.connect_write_pipe(_WriteProtocol, pipe)
            transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
            writer._transport, writer._protocol = transport, protocol
        else:
            writer._pool = ThreadPoolExecutor(1, thread_name_prefix="snakepit-stdout")
        return writer

    def write_nowait(self, payload: bytes) -> bool:
        """Queue one frame without waiting for the pipe; False if stdout is gone."""
        if self.broken:
            return False
        if self._transport is not None:
            if self._protocol.lost is not None or self._transport.is_closing():
                self.broken = True
                return False
            if len(payload) <= JOIN_LIMIT:
                self._transport.write(frame(payload))
            else:
                self._transport.write(len(payload).to_bytes(HEADER, "big"))
                self._transport.write(payload)
            return True
        self._pool.submit(_write_all, self.fd, frame(payload))
        return True

    async def write(self, payload: bytes) -> None:
        """Write one frame. While the pipe is over its high-water mark,
        writers wait their turn (first come, first served) and write only once
        it has drained, so at most one frame beyond the mark is ever buffered,
        however many tasks write. Raises BrokenPipeError when the reader is gone."""
        if self._transport is None:
            await self._write_in_thread(payload)
        elif self._protocol.paused or self._turn.locked():
            async with self._turn:
                await self._protocol.drain()
                self._put(payload)
        else:
            self._put(payload)

    def _put(self, payload: bytes) -> None:
        if not self.write_nowait(payload):
            raise BrokenPipeError("stdout is closed")

    async def _write_in_thread(self, payload: bytes) -> None:
        if self.broken:
            raise BrokenPipeError("stdout is closed")
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, _write_all, self.fd, frame(payload))
        except OSError:
            self.broken = True
            raise BrokenPipeError("stdout is closed") from None

    async def aclose(self, timeout: float = 2.0) -> None:
        """Flush what is buffered (up to ``timeout`` seconds) and close."""
        if self._transport is not None:
            self._transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(self._protocol.closed), timeout)
            except (TimeoutError, asyncio.TimeoutError):
                self._transport.abort()
        elif self._pool is not None:
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(loop.run_in_executor(self._pool, os.close, self.fd), timeout)
            except (TimeoutError, asyncio.TimeoutError, OSError):
                pass
            self._pool.shutdown(wait=False)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl

        if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < PIPE_SIZE:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (OSError, AttributeError, ImportError):
        pass  # not Linux, or over /proc/sys/fs/pipe-max-size: keep the default


def _pollable(fd: int) -> bool:
    """Whether asyncio's pipe transports can watch ``fd`` (epoll refuses regular files)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        return False
    if stat.S_ISCHR(mode):
        # /dev/null and friends are character devices epoll cannot watch; terminals can.
        import select

        ep = select.epoll() if hasattr(select, "epoll") else None
        if ep is not None:
            try:
                ep.register(fd, select.EPOLLIN)
            except OSError:
                return False
            finally:
                ep.close()
    return True


# -- codecs -------------------------------------------------------------------------


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


def _stdlib_default(obj: Any) -> Any:
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":
        return obj.tolist()
    return _json_default(obj)


class Codec:
    """A payload encoding: ``name``, ``decode``, ``encode_value``, ``envelope``, ``recover_id``."""

    name = ""

    def decode(self, payload: bytes) -> Any:
        raise NotImplementedError

    def encode_value(self, value: Any) -> bytes:
        raise NotImplementedError

    def envelope(self, fields: list[tuple[str, Any]]) -> bytes:
        """A map frame of ``fields`` in order; :class:`Encoded` values are spliced in."""
        raise NotImplementedError

    def recover_id(self, payload: bytes) -> int | None:
        """Best effort: the top-level ``id`` of a frame that does not decode."""
        raise NotImplementedError


_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# Tokens of (possibly broken) JSON that matter for finding the top-level "id".
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]]')
_JSON_ID_VALUE = re.compile(rb"\s*:\s*(-?\d{1,19})(?![\d.eE])")


class JsonCodec(Codec):
    name = "json"

    def decode(self, payload: bytes) -> Any:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"invalid JSON: {exc}") from None

    def encode_value(self, value: Any) -> bytes:
        try:
            return orjson.dumps(value, default=_json_default, option=_JSON_OPTS)
        except orjson.JSONEncodeError:
            # orjson refuses integers beyond 64 bits and very deep nesting; the
            # standard library takes both (and raises a clear TypeError otherwise).
            return json.dumps(value, default=_stdlib_default, separators=(",", ":"), allow_nan=False).encode()

    def envelope(self, fields: list[tuple[str, Any]]) -> bytes:
        parts = []
        for key, value in fields:
            data = value.data if isinstance(value, Encoded) else orjson.dumps(value)
            parts.append(b'"%s":%s' % (key.encode(), data))
        return b"{" + b",".join(parts) + b"}"

    def recover_id(self, payload: bytes) -> int | None:
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

    def decode(self, payload: bytes) -> Any:
        try:
            return msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except UnicodeDecodeError:
            pass  # a str that is not UTF-8 (Msgpax sends binaries as str): keep it as bytes
        except Exception as exc:  # noqa: BLE001 - any unpacker failure is bad input
            raise PayloadError(f"invalid MessagePack: {exc or type(exc).__name__}") from None
        try:
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=False, unicode_errors="surrogateescape")
        except Exception as exc:  # noqa: BLE001
            raise PayloadError(f"invalid MessagePack: {exc or type(exc).__name__}") from None
        return _unescape(obj)

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

    def recover_id(self, payload: bytes) -> int | None:
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
