"""Spawn the real worker in stdio mode (``--mode pool-worker``) and talk frames to it.

Like :mod:`tests.bridge_process`, but for Snakepit's stdin/stdout protocol:
4-byte big-endian length + JSON or MessagePack payload both ways. stdout is
read by a background thread that splits it into frames (and keeps every byte,
so a test can check that stdout held nothing but frames); stderr is collected
too. No sleeps: every read waits for a frame with a timeout.

The bottom of this module also holds the extra commands the stdio tests load
with ``--adapter tests.stdio_process``.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "grpc_bridge.py"
PRIV = ROOT / "priv" / "python"
_END = object()


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def split_frames(data: bytes) -> list[bytes]:
    """Every frame in ``data``; raises ValueError unless ``data`` is exactly whole frames."""
    frames, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError(f"{len(data) - pos} stray bytes at offset {pos}")
        size = int.from_bytes(data[pos:pos + 4], "big")
        if pos + 4 + size > len(data):
            raise ValueError(f"frame at offset {pos} declares {size} bytes, only {len(data) - pos - 4} follow")
        frames.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return frames


def encode(obj: Any, protocol: str) -> bytes:
    if protocol == "msgpack":
        return msgpack.packb(obj, use_bin_type=True)
    return json.dumps(obj, separators=(",", ":")).encode()


def decode(payload: bytes, protocol: str) -> Any:
    if protocol == "msgpack":
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return json.loads(payload)


class StdioBridge:
    """A running worker in pool-worker mode.

    ``protocol``: "json" or "msgpack" passed as ``--protocol``; with
    ``negotiate`` set instead, no ``--protocol`` is passed and the first frame
    is the negotiation, as Snakepit's ``wire_protocol: :auto`` sends it.
    ``script``: the entry script (default the repository's grpc_bridge.py);
    ``mode_flag=False`` leaves ``--mode pool-worker`` out (generic_bridge_v2.py).
    """

    def __init__(self, *args: str, protocol: str = "json", negotiate: dict | None = None,
                 script: Path = SCRIPT, mode_flag: bool = True, cwd: Path = ROOT,
                 env: dict[str, str] | None = None, init: bool = True, timeout: float = 10.0,
                 read_stdout: bool = True) -> None:
        argv = [sys.executable, str(script)]
        if mode_flag:
            argv += ["--mode", "pool-worker"]
        if negotiate is None:
            argv += ["--protocol", protocol]
        argv += list(args)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.protocol = protocol
        self.proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.stdout_bytes = bytearray()
        self.frames: queue.Queue[Any] = queue.Queue()
        self.stray: str | None = None  # set if stdout held something that is not a frame
        self._stderr: list[bytes] = []
        self._next_id = 1
        #: Cleared, the stdout thread stops reading (to fill the pipe: back-pressure tests).
        self.reading = threading.Event()
        if read_stdout:
            self.reading.set()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()
        self.selected: dict | None = None
        if negotiate is not None:
            self.send_raw(json.dumps(negotiate).encode())
            self.selected = json.loads(self.recv_raw(timeout))
            if self.selected.get("type") == "protocol_selected":
                self.protocol = self.selected["protocol"]
        if init:
            reply = self.call("ping", {"worker_id": "test-worker", "initialization": True}, timeout=timeout)
            if reply.get("success") is not True:
                raise RuntimeError(f"init ping failed: {reply}\n{self.stderr_text()}")

    # -- background readers ---------------------------------------------------------

    def _read_stdout(self) -> None:
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while True:
            self.reading.wait()
            try:
                data = os.read(fd, 1 << 20)
            except OSError:
                data = b""
            if not data:
                break
            self.stdout_bytes += data
            buf += data
            while len(buf) >= 4:
                size = int.from_bytes(buf[:4], "big")
                if size > 512 * 1024 * 1024:
                    self.stray = f"implausible frame length {size}: stdout is not frames ({bytes(buf[:40])!r})"
                    break
                if len(buf) < 4 + size:
                    break
                self.frames.put(bytes(buf[4:4 + size]))
                del buf[:4 + size]
        if buf:
            self.stray = self.stray or f"{len(buf)} bytes after the last whole frame"
        self.frames.put(_END)

    def _read_stderr(self) -> None:
        try:
            for line in iter(self.proc.stderr.readline, b""):
                self._stderr.append(line)
        except (OSError, ValueError):  # __exit__ closed the pipe under a worker's child that kept it open
            pass

    def stderr_text(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def wait_stderr(self, text: str, timeout: float = 5.0, count: int = 1) -> bool:
        """Wait until ``text`` appears ``count`` times on stderr (polled: stderr
        is read by a thread and carries no frames to wait on)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stderr_text().count(text) >= count:
                return True
            if self.proc.poll() is not None:
                self._stderr_thread.join(1)
                return self.stderr_text().count(text) >= count
            time.sleep(0.02)
        return False

    # -- frames -----------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send_raw(self, payload: bytes) -> None:
        self.send_bytes(frame(payload))

    def send(self, obj: Any) -> None:
        self.send_raw(encode(obj, self.protocol))

    def recv_raw(self, timeout: float = 10.0) -> bytes:
        try:
            item = self.frames.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no frame within {timeout}s; exit={self.proc.poll()}\n{self.stderr_text()}") from None
        if item is _END:
            self.frames.put(_END)
            raise EOFError(f"stdout closed; exit={self.proc.poll()} stray={self.stray}\n{self.stderr_text()}")
        return item

    def recv(self, timeout: float = 10.0) -> Any:
        return decode(self.recv_raw(timeout), self.protocol)

    def new_id(self) -> int:
        rid, self._next_id = self._next_id, self._next_id + 1
        return rid

    def request(self, command: str, args: dict | None = None, **extra: Any) -> int:
        """Send a request; returns its id."""
        rid = extra.pop("id", None)
        rid = self.new_id() if rid is None else rid
        self.send({"id": rid, "command": command, "args": args or {},
                   "timestamp": "2026-01-01T00:00:00.000000Z", **extra})
        return rid

    def call(self, command: str, args: dict | None = None, timeout: float = 10.0, **extra: Any) -> dict:
        rid = self.request(command, args, **extra)
        reply = self.recv(timeout)
        assert reply.get("id") == rid, f"expected the answer to {rid}, got {reply}"
        return reply

    def stream(self, command: str, args: dict | None = None, timeout: float = 10.0, **extra: Any) -> list[dict]:
        """A ``"stream": true`` request; every chunk frame up to the final one."""
        rid = self.request(command, args, stream=True, **extra)
        chunks = []
        while True:
            chunk = self.recv(timeout)
            assert chunk["id"] == rid, chunk
            chunks.append(chunk)
            if chunk["is_final"]:
                return chunks

    # -- process ----------------------------------------------------------------------

    def close_stdin(self) -> None:
        if not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait(self, timeout: float = 5.0) -> int:
        code = self.proc.wait(timeout)
        self._stderr_thread.join(2)
        return code

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> StdioBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            try:
                self.close_stdin()
            except OSError:
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.kill()
        self._stderr_thread.join(1)  # the worker is gone: its stderr ends, unless a child of it holds the pipe
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


# -- commands for ``--adapter tests.stdio_process`` ---------------------------------------

from snakepit_bridge import command  # noqa: E402

_running = 0
_peak = 0


@command("t_sleep")
async def t_sleep(args: dict) -> dict:
    """Sleep ``seconds``; counts how many run at once (see t_peak)."""
    global _running, _peak
    _running += 1
    _peak = max(_peak, _running)
    if args.get("announce"):
        print("T_SLEEP-START", file=sys.stderr, flush=True)
    try:
        await asyncio.sleep(float(args.get("seconds", 0.1)))
    finally:
        _running -= 1
    return {"slept": args.get("seconds", 0.1), "tag": args.get("tag")}


@command("t_peak")
def t_peak(args: dict) -> dict:
    return {"peak": _peak}


@command("t_fail")
def t_fail(args: dict) -> dict:
    raise RuntimeError(args.get("message", "handler failed on purpose"))


@command("t_noisy")
def t_noisy(args: dict, ctx) -> dict:
    """Everything a handler might do that could reach stdout."""
    import logging
    import warnings

    print("NOISY-print from a handler")
    sys.stdout.write("NOISY-sys.stdout.write\n")
    sys.__stdout__.write("NOISY-sys.__stdout__\n")
    sys.__stdout__.flush()
    os.write(1, b"NOISY-fd1 write\n")
    warnings.warn("NOISY-warning", stacklevel=1)
    logging.getLogger("user").error("NOISY-stdlib logging")
    ctx.log.info("NOISY-structlog")
    subprocess.run(["echo", "NOISY-child process"], check=True)
    return {"ok": True}


@command("t_input")
def t_input(args: dict) -> dict:
    """A handler that reads stdin must not steal frames."""
    return {"read": sys.stdin.read()}


@command("t_value")
def t_value(args: dict) -> dict:
    """Returns a value of a kind JSON cannot carry as is."""
    import numpy as np

    kind = args.get("kind")
    values = {
        "bytes_utf8": "héllo".encode(),
        "bytes_binary": bytes(range(256)),
        "ndarray": np.arange(6, dtype=np.int32).reshape(2, 3),
        "float_array": np.array([0.5, 1.5]),
        "np_scalar": np.float64(2.5),
        "set": {3},
        "object": object(),
        "huge_int": 2 ** 70,
    }
    return {"value": values[kind]}


@command("t_blob")
def t_blob(args: dict) -> dict:
    return {"blob": b"\x00" * int(args["size"])}


@command("t_session_hook")
def t_session_hook(args: dict, ctx) -> dict:
    """Registers a close hook on the caller's session that reports on stderr."""
    session = ctx.require_session()
    session.on_close(lambda: print(f"SESSION-HOOK-RAN {session.id}", file=sys.stderr, flush=True))
    return {"session": session.id}


@command("t_stream_fail")
def t_stream_fail(args: dict):
    yield {"n": 1}
    raise ValueError("stream broke on purpose")


@command("t_counted_stream")
def t_counted_stream(args: dict):
    """``count`` chunks of ``size`` bytes; reports progress on stderr every 100."""
    payload = "x" * int(args.get("size", 1000))
    for i in range(int(args["count"])):
        if i % 100 == 0:
            print(f"PRODUCED {i}", file=sys.stderr, flush=True)
        yield {"i": i, "payload": payload}
