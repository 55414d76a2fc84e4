"""Length-prefixed frames on file descriptors, read and written without blocking the loop.

Framing (Erlang's ``{:packet, 4}``): every frame is a 4-byte big-endian
unsigned length followed by that many payload bytes, in both directions.

:class:`FrameReader` and :class:`FrameWriter` never block the event loop: on a
pipe, socket or terminal they are non-blocking on the loop; on anything else
(a regular file, ``/dev/null``) blocking I/O runs in one private thread.
Both are bounded: the reader refuses a declared length above its limit before
reading the payload (:class:`FrameTooLarge`) and reads no further ahead than a
small buffer; the writer's :meth:`FrameWriter.write` waits while the pipe's
buffer is above its high-water mark, so a slow reader slows the producers.

The payload codecs are in :mod:`snakepit_bridge.codecs.frames`.
"""
from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .._lazy import lazy_module

if TYPE_CHECKING:
    import asyncio

    _Protocol = asyncio.Protocol
else:
    asyncio = lazy_module("asyncio")  # imported on first use: the stdio front end needs no loop (see _lazy.py)
    _Protocol = object  # what the loop calls on it is defined below, so asyncio need not be imported to define it

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


class FrameReader:
    """Reads frames from a file descriptor (which it then owns), on the event loop.

    Push, not pull: whenever bytes arrive, :attr:`on_ready` is called (from
    the loop) and the owner takes complete frames with :meth:`take`, which
    never waits; so a frame can be answered in the very callback that read it.

    Reads go straight into one reusable buffer (no allocation per read, one
    ``read`` syscall per wake-up) and run READ_AHEAD bytes ahead whether or
    not a frame is being taken, so :attr:`on_eof` fires as soon as the writer
    closes its end, also while the owner is busy with an earlier frame. A
    frame larger than that buffer gets a buffer of its own, read into directly
    and handed out as is (a ``bytearray``): one copy from the pipe, none after.
    An fd the loop cannot poll (a regular file, ``/dev/null``) is fed through
    a pipe by a private thread.
    """

    def __init__(self, fd: int, limit: int, buffered: bytes = b"") -> None:
        """``buffered``: bytes already read from ``fd`` (at most READ_AHEAD), taken first."""
        self.limit = limit
        #: Called (from the loop) when bytes arrived or the input ended: call :meth:`take`.
        self.on_ready: Callable[[], None] | None = None
        #: Called (possibly more than once) when the input reaches EOF or fails.
        self.on_eof: Callable[[], None] | None = None
        self.fd = _pollable_fd(fd)
        self._loop = asyncio.get_running_loop()
        self._buf = bytearray(READ_AHEAD)
        self._view = memoryview(self._buf)
        self._start = 0  # unread bytes are _buf[_start:_end]
        self._end = len(buffered)
        self._buf[:self._end] = buffered
        self._big: bytearray | None = None  # a payload too large for _buf, being read
        self._big_filled = 0
        self._reading = False
        self._closed = False
        self.eof = False
        self.error: OSError | None = None
        os.set_blocking(self.fd, False)
        _grow_pipe(self.fd)
        self._resume()

    @property
    def ended(self) -> bool:
        """The input ended and every frame in it was taken."""
        return self.eof and self._end == self._start and self._big is None

    def take(self) -> bytes | bytearray | None:
        """The next complete frame's payload, without waiting; None if none is
        buffered (yet: see :attr:`ended`). Raises :class:`FrameTooLarge` as soon
        as a header declares more than the limit, :class:`TruncatedFrame` once
        at EOF inside a frame, and the ``OSError`` a read failed with."""
        big = self._big
        if big is not None:
            if self._big_filled < len(big):
                self._short()
                return None
            self._big = None
            self._resume()
            return big
        start, avail = self._start, self._end - self._start
        if avail < HEADER:
            self._short()
            return None
        size = int.from_bytes(self._view[start:start + HEADER], "big")
        if size > self.limit:
            raise FrameTooLarge(size, self.limit)
        begin = start + HEADER
        if avail >= HEADER + size:  # the usual case: the whole frame is here
            self._start = begin + size
            if self._start == self._end:
                self._start = self._end = 0
            if not self._reading:
                self._resume()
            return bytes(self._view[begin:begin + size])
        if HEADER + size > len(self._buf):
            big = bytearray(size)
            big[:avail - HEADER] = self._view[begin:self._end]
            self._big, self._big_filled = big, avail - HEADER
            self._start = self._end = 0
            self._resume()
        elif start + HEADER + size > len(self._buf):
            self._compact()
        self._short()
        return None

    def _short(self) -> None:
        """No complete frame: nothing to do, unless the input ended inside one (raises)."""
        if not self.eof:
            return None
        if self._big is not None:
            got, want = self._big_filled, len(self._big)
            self._big = None
            raise TruncatedFrame(f"EOF after {got} of {want} payload bytes")
        avail = self._end - self._start
        if avail == 0:
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            return None
        self._start = self._end = 0
        if avail < HEADER:
            raise TruncatedFrame(f"EOF inside a frame header ({avail} of {HEADER} bytes)")
        raise TruncatedFrame(f"EOF after {avail - HEADER} payload bytes of a frame")

    def close(self) -> None:
        """Stop reading and close the fd; frames already buffered can still be taken."""
        self._pause()
        self.eof = True
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                os.close(self.fd)

    # -- the loop's side ------------------------------------------------------

    def _resume(self) -> None:
        if not self._reading and not self.eof:
            self._reading = True
            self._loop.add_reader(self.fd, self._readable)

    def _pause(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self.fd)

    def _compact(self) -> None:
        if self._start:
            left = self._end - self._start
            self._buf[:left] = self._view[self._start:self._end]
            self._start, self._end = 0, left

    def _readable(self) -> None:
        big = self._big
        try:
            if big is not None:
                n = os.readv(self.fd, [memoryview(big)[self._big_filled:]])
            else:
                if self._end == len(self._buf):
                    self._compact()
                    if self._end == len(self._buf):  # full of frames not taken yet: wait for take()
                        self._pause()
                        return
                n = os.readv(self.fd, [self._view[self._end:]])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.error = exc
            n = 0
        if n == 0:
            self.eof = True
            self._pause()
            if self.on_eof is not None:
                self.on_eof()
        elif big is not None:
            self._big_filled += n
            if self._big_filled < len(big):
                return  # the owner has nothing to take until it is complete
        else:
            self._end += n
        if self.on_ready is not None:
            self.on_ready()


def _pollable_fd(fd: int) -> int:
    """``fd`` itself if the loop can poll it, else the read end of a pipe a
    daemon thread copies it into (blocking writes: no more than a pipe's
    capacity read ahead). The thread ends at EOF, or when the pipe is closed."""
    if _pollable(fd):
        return fd
    read_end, write_end = os.pipe()

    def copy() -> None:
        try:
            while data := os.read(fd, 65536):
                _write_all(write_end, data)
        except OSError:
            pass  # our end closed, or the input failed: either way, EOF
        finally:
            os.close(write_end)
            with contextlib.suppress(OSError):
                os.close(fd)

    threading.Thread(target=copy, name="snakepit-stdin", daemon=True).start()
    return read_end


# -- writing ------------------------------------------------------------------------


class _WriteProtocol(_Protocol):
    """Flow control for a write pipe: ``drain()`` waits while it is paused."""

    def __init__(self) -> None:
        self.paused = False
        self.lost: BaseException | None = None
        self.waiters: list[asyncio.Future[None]] = []
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

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
        self._protocol: _WriteProtocol  # set with _transport, read only while that is set
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
                self._write_large(payload)
            return True
        assert self._pool is not None  # no transport: open() made the thread instead
        self._pool.submit(_write_all, self.fd, frame(payload))
        return True

    def _write_large(self, payload: bytes) -> None:
        """Header and payload in one ``writev`` when nothing is queued (the
        reader wakes once, for the whole frame, and the payload is not
        copied); what the pipe does not take is queued in the transport."""
        assert self._transport is not None  # called from write_nowait's pipe branch
        header = len(payload).to_bytes(HEADER, "big")
        sent = 0
        if not self._transport.get_write_buffer_size():
            try:
                sent = os.writev(self.fd, [header, payload])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                pass  # the transport's own write below reports it
        if sent < HEADER:
            self._transport.write(header[sent:])
            self._transport.write(payload)
        elif sent < HEADER + len(payload):
            self._transport.write(memoryview(payload)[sent - HEADER:])

    @property
    def ready(self) -> bool:
        """A frame written now goes out without waiting: the pipe is below its
        high-water mark and no writer is waiting for it to drain."""
        return (self._transport is not None and not self._protocol.paused and not self._turn.locked()
                and not self.broken)

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
