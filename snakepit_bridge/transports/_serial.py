"""The stdio worker's serial front end: blocking reads, inline answers, no event loop.

A Snakepit 0.3 pool sends one request at a time and waits for its answer, and
most of what it sends (the negotiation frame, ``ping``, ``compute``, ``info``)
is answered by an inline handler (:class:`~snakepit_bridge.registry.Kind`
``INLINE``) that never waits. For those, an event loop is pure overhead: a
poll, a callback and a non-blocking read per frame. So a worker that owns its
process starts here: the main thread reads frames with blocking reads and
answers each one the moment it is read, through :meth:`Dispatcher.call_now`
(the same handler lookup, argument binding, stats, per-call log line and
error mapping as on the loop) and :class:`StdioServer`'s own frame builders
(the same wire format, byte for byte). It serves before the event loop
exists and before asyncio is imported (:mod:`snakepit_bridge._lazy`);
what can wait until the first answer is out (the ready line, the parent
watcher, the reaper process) waits for it (:meth:`SerialFront.when_idle`).

The first frame that needs anything more hands over, once and for good, to the
asyncio :class:`StdioServer`: a non-inline command, a session, the ``stream``
or ``pipeline`` opt-ins, a ``timeout_ms``, a frame that does not decode or is
not a valid request, a first frame that is not a negotiation (unless
``--protocol`` is given), a failed negotiation, a frame larger than the read
buffer, EOF inside a frame or a failing read. :meth:`SerialFront.serve`
returns the bytes it read but did not serve, that frame first, and the
server's :class:`FrameReader` starts from them, so from then on everything is
exactly as if the loop had served from the start.

Ending. EOF on stdin between frames, SIGTERM/SIGINT and the parent's death
stop the front end and are passed on to the server, which ends the worker
through its usual path (grace, sessions, exit code, the "stopping" and
"stopped" lines). Signals use the worker's one mechanism (the plain signal
handlers :func:`~snakepit_bridge.transports.stdio.run` installs, which call
:meth:`SerialFront.stop` while the front end serves): a signal during a
blocking read interrupts it at once; one during an answer lets the answer
finish. The parent watcher's thread cannot interrupt a read; the watchdog it
arms ends the worker if nothing else does (the parent-death signal, on
Linux, comes as a signal and does interrupt it).
"""
from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..calls import Request
from ..codecs.frames import CODECS, Codec
from ..codecs.values import loads_json
from ..exitcodes import ExitCode
from ..logging import get_logger
from ._framing import HEADER, JOIN_LIMIT, READ_AHEAD, frame
from .stdio import StdioServer, choose_protocol, now_iso, parse_request

if TYPE_CHECKING:
    from ..dispatch import Dispatcher

__all__ = ["SerialFront"]


class _Interrupted(Exception):
    """Raised by :meth:`SerialFront.stop` into a blocking read."""


class SerialFront:
    """Serves serial inline requests from ``read_fd`` to ``write_fd`` until a
    frame needs the event loop or the worker stops (see the module docstring)."""

    def __init__(self, dispatcher: Dispatcher, read_fd: int, write_fd: int, *, protocol: str | None = None) -> None:
        self.dispatcher = dispatcher
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.fixed = protocol
        self.codec: Codec | None = CODECS[protocol]() if protocol else None
        self.settled = False  # the first frame has been seen (negotiation is over)
        self.limit = dispatcher.config.max_message_bytes
        self.log = get_logger("snakepit_bridge.stdio")
        #: True until :meth:`hand_over`: signals and the parent watcher call :meth:`stop`.
        self.serving = True
        #: Why serving stopped (and how the server is to stop): ``(method, argument)``.
        self.stopped: tuple[str, str] | None = None
        self.server: StdioServer | None = None
        self._reading = False
        self._buf = bytearray(READ_AHEAD)
        self._view = memoryview(self._buf)
        self._whole = [self._view]  # readv's buffers when the buffer is empty (the usual case)
        self._later: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._why = ""  # what made it hand over (for the debug line)

    @property
    def exit_code(self) -> ExitCode:
        """The worker's exit code (the server's, once it has taken over)."""
        return self.server.exit_code if self.server is not None else ExitCode.OK

    # -- lifecycle ------------------------------------------------------------------

    def serve(self) -> bytes:
        """Serve until a frame needs the loop or the worker stops; returns the
        bytes read but not served (the frame to hand over first), for the
        server's reader. Blocks the calling thread (the main one)."""
        self.dispatcher.defer = self._defer  # the per-call log line, after the answer
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.set_blocking(fd, True)  # whatever a parent left set; the server's reader and writer unset it
        try:
            return self._serve()
        except _Interrupted:
            return b""
        finally:
            self.dispatcher.defer = None
            self._run_later()

    def when_idle(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` once the first answer is out or there is nothing to
        read (whichever comes first), or when serving ends."""
        self._later.append((fn, ()))

    def stop(self, method: str, arg: str) -> None:
        """Stop serving; the server is then stopped with ``server.<method>(arg)``
        (``on_signal`` or ``halt``). From a signal handler (in the main
        thread) a blocking read is interrupted; from another thread the
        front end stops after the read in progress."""
        if self.stopped is None:
            self.stopped = (method, arg)
        if self._reading and threading.current_thread() is threading.main_thread():
            raise _Interrupted()

    def hand_over(self, server: StdioServer) -> None:
        """Pass the settled protocol, and a stop that came first, to ``server``;
        from now on signals go to it."""
        server.settled = self.settled
        server.codec = self.codec
        self.server = server
        if self.stopped is None:
            self.log.debug("serial front end hands over to the event loop", reason=self._why)
        self.serving = False
        if self.stopped is not None:
            method, arg = self.stopped
            getattr(server, method)(arg)

    # -- reading --------------------------------------------------------------------

    def _serve(self) -> bytes:
        view, start, end = self._view, 0, 0
        while True:
            avail = end - start
            if avail >= HEADER:
                size = int.from_bytes(view[start:start + HEADER], "big")
                if avail >= HEADER + size:
                    if not self._answer_frame(bytes(view[start + HEADER:start + HEADER + size])):
                        return bytes(view[start:end])
                    start += HEADER + size
                    if start == end:
                        start = end = 0
                    continue
                if size > self.limit or HEADER + size > len(self._buf):
                    self._why = f"a frame of {size} bytes"
                    return bytes(view[start:end])  # too large, or too large for this buffer: the server's reader
            need = HEADER + size if avail >= HEADER else HEADER
            if start and start + need > len(self._buf):  # the frame would not fit after `start`
                view[:avail] = view[start:end]
                start, end = 0, avail
            if self.stopped is not None:
                return b""
            if self._later and not self._readable():
                self._run_later()  # idle: what waits for it (see when_idle) need not wait for a frame
            try:
                self._reading = True
                if self.stopped is not None:  # a stop that came just before the flag was set
                    return b""
                n = os.readv(self.read_fd, self._whole if end == 0 else [view[end:]])
            except OSError as exc:
                self._why = f"reading stdin failed: {exc}"
                return bytes(view[start:end])  # the server's reader meets the error again and reports it
            finally:
                self._reading = False
            if n == 0:
                if avail:
                    self._why = "EOF inside a frame"
                    return bytes(view[start:end])  # the server's reader reports it
                self.stop("halt", "stdin closed")
                return b""
            end += n

    def _readable(self) -> bool:
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        return bool(poller.poll(0))

    def _answer_frame(self, payload: bytes) -> bool:
        """Answer one frame now; False if it needs the server (nothing was done then)."""
        if not self.settled:
            self.settled = True
            negotiated = self._negotiate(payload)
            if negotiated is not None:
                if self._later:
                    self._run_later()
                return negotiated
        codec = self.codec
        assert codec is not None  # settled
        try:
            w = parse_request(codec.decode(payload))
        except Exception:  # noqa: BLE001 - bad input: the server decodes it again and answers the error
            self._why = "a frame that is not a valid request"
            return False
        if w.stream or w.pipeline or w.timeout_ms or w.session_id:
            self._why = f"request {w.id!r} ({w.command}) asks for stream, pipeline, timeout_ms or a session"
            return False
        result = self.dispatcher.call_now(Request(w.command, w.args, str(w.id), encode=self._encode))
        if result is None:
            self._why = f"request {w.id!r} ({w.command}) is not an inline call"
            return False
        self._write(self._answer(w, result))
        if self._later:
            self._run_later()
        return True

    def _negotiate(self, payload: bytes) -> bool | None:
        """The first frame: True if it was a negotiation, answered; None if it
        is a request to serve with ``--protocol``'s codec; False: the server's."""
        msg = None
        if payload[:1] == b"{":
            with contextlib.suppress(ValueError):
                msg = loads_json(payload)
        if not (isinstance(msg, dict) and msg.get("type") == "protocol_negotiation"):
            if self.codec is None:
                self.settled = False  # the server guesses the protocol, and says so
                self._why = "a first frame that is not a negotiation"
                return False
            return None
        selected = choose_protocol(msg.get("supported"), msg.get("preferred"), self.fixed)
        if selected is None:
            self.settled = False  # the server answers protocol_error and exits
            self._why = "no common protocol"
            return False
        self._write(orjson.dumps({"type": "protocol_selected", "protocol": selected, "timestamp": now_iso()}))
        self.codec = CODECS[selected]()  # after the answer: MessagePack's is msgpack's first use (it is imported then)
        offered = msg.get("supported")
        self._defer(lambda: self.log.info("protocol negotiated", protocol=selected, offered=offered))
        return True

    # -- writing --------------------------------------------------------------------

    def _write(self, payload: bytes) -> None:
        """One frame, blocking until the pipe took it (a slow reader slows us)."""
        try:
            if len(payload) <= JOIN_LIMIT:
                data = frame(payload)
                sent = os.write(self.write_fd, data)
                if sent < len(data):  # a signal handler ran mid-write
                    rest = memoryview(data)[sent:]
                    while rest:
                        rest = rest[os.write(self.write_fd, rest):]
            else:
                header, body = len(payload).to_bytes(HEADER, "big"), memoryview(payload)
                sent = os.writev(self.write_fd, [header, body])
                while sent < HEADER:
                    sent += os.write(self.write_fd, header[sent:])
                body = body[sent - HEADER:]
                while body:
                    body = body[os.write(self.write_fd, body):]
        except OSError:
            self.log.warning("stdout is closed; stopping")
            self.stop("halt", "stdout closed")

    # StdioServer's own builders (they use only ``codec``, ``limit`` and
    # ``log``, which this class has too): both phases send the same bytes.
    # (Typed Any: mypy checks ``self`` against StdioServer.)
    _encode: Any = StdioServer._encode
    _answer: Any = StdioServer._answer
    _frame: Any = StdioServer._frame
    _error_frame: Any = StdioServer._error_frame

    # -- the per-call log line --------------------------------------------------------

    def _defer(self, fn: Callable[..., Any], *args: Any) -> None:
        self._later.append((fn, args))

    def _run_later(self) -> None:
        later, self._later = self._later, []
        for fn, args in later:
            fn(*args)
