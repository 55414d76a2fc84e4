"""Length-prefixed frames on file descriptors, read and written without blocking the loop.

Framing (Erlang's ``{:packet, 4}``): every frame is a 4-byte big-endian
unsigned length followed by that many payload bytes, in both directions.

:class:`FrameReader` and :class:`FrameWriter` never block the event loop: on a
pipe, socket or terminal they use asyncio's pipe transports; on anything else
(a regular file, ``/dev/null``) blocking I/O runs in one private thread.
Both are bounded: the reader refuses a declared length above its limit before
reading the payload (:class:`FrameTooLarge`) and reads no further ahead than a
small buffer; the writer's :meth:`FrameWriter.write` waits while the pipe's
buffer is above its high-water mark, so a slow reader slows the producers.

The payload codecs are in :mod:`snakepit_bridge.codecs.frames`.
"""
from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

__all__ = ["FrameReader", "FrameTooLarge", "FrameWriter", "TruncatedFrame", "frame"]

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


class _NotifyingProtocol(asyncio.StreamReaderProtocol):
    """Tells the owner when the pipe reaches EOF (or fails) as soon as the
    transport sees it, even while nobody is waiting for a frame."""

    def __init__(self, reader: asyncio.StreamReader, on_eof: Callable[[], None]) -> None:
        super().__init__(reader)
        self._on_eof = on_eof

    def eof_received(self) -> bool | None:
        self._on_eof()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()
        super().connection_lost(exc)


class FrameReader:
    """Reads frames from a file descriptor (which it then owns).

    On a pipe the transport reads ahead (up to READ_AHEAD bytes) whether or
    not a frame is being awaited, so :attr:`on_eof` fires as soon as the
    writer closes its end, also while the owner is busy with an earlier frame.
    """

    def __init__(self, source: _Source, limit: int) -> None:
        self._source = source
        self.limit = limit
        self._transport: asyncio.BaseTransport | None = None
        #: Called (possibly more than once) when the pipe reaches EOF or fails.
        self.on_eof: Callable[[], None] | None = None

    @classmethod
    async def open(cls, fd: int, limit: int) -> FrameReader:
        if not _pollable(fd):
            return cls(_ThreadSource(fd), limit)
        _grow_pipe(fd)
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader(limit=READ_AHEAD // 2, loop=loop)
        self = cls(stream, limit)
        pipe = os.fdopen(fd, "rb", buffering=0)
        self._transport, _ = await loop.connect_read_pipe(lambda: _NotifyingProtocol(stream, self._eof_seen), pipe)
        return self

    def _eof_seen(self) -> None:
        if self.on_eof is not None:
            self.on_eof()

    async def read(self) -> bytes | None:
        """The next frame's payload; None at EOF between frames (or after :meth:`close`).

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
        """Stop reading the fd; a pending :meth:`read` then ends (buffered frames first)."""
        if self._transport is not None:
            self._transport.close()  # its connection_lost feeds EOF to the stream
        elif isinstance(self._source, _ThreadSource):
            self._source.eof = True
            self._source.pool.shutdown(wait=False)


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
