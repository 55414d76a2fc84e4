"""Run a real bridge process from tests, as a Snakepit pool runs it.

    from snakepit_bridge.testing import Bridge
    from snakepit_bridge.client import Client

    with Bridge("--adapter", "my_app.handlers") as bridge, Client(bridge.target) as c:
        assert c.execute("my_command", {"x": 1}).success

stdin is a pipe held open (EOF there means the pool is gone), stdout is read
until the ``GRPC_SERVER_READY_ON_PORT=`` line (no sleeps; a timeout), stderr
is collected in the background.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = ["Bridge", "READY_PREFIX", "read_ready_port"]

READY_PREFIX = "GRPC_SERVER_READY_ON_PORT="


def read_ready_port(stdout: IO[bytes], timeout: float, lines: list[str] | None = None) -> int | None:
    """Read ``stdout`` until the ready line and return its port; None if the
    stream ends or ``timeout`` seconds pass first. Other lines go to ``lines``."""
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            data = os.read(stdout.fileno(), 4096)
            if not data:
                return None
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if lines is not None:
                    lines.append(text)
                if text.startswith(READY_PREFIX):
                    return int(text[len(READY_PREFIX):])
    return None


class Bridge:
    """A running bridge in gRPC mode, started with ``--port 0`` unless a port is given.

    ``script``: the entry script to run (default ``python -m snakepit_bridge``).
    """

    def __init__(self, *args: str, script: str | Path | None = None, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None, ready_timeout: float = 10.0,
                 expect_ready: bool = True) -> None:
        self.args = ["--port", "0", *args] if "--port" not in args else list(args)
        entry: Sequence[str] = [str(script)] if script else ["-m", "snakepit_bridge"]
        self.proc = subprocess.Popen(
            [sys.executable, *entry, *self.args], cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._stderr: list[bytes] = []
        self._stderr_thread = threading.Thread(target=self._drain, daemon=True)
        self._stderr_thread.start()
        self.stdout_lines: list[str] = []
        self.port: int | None = None
        if expect_ready:
            self.port = self.wait_ready(ready_timeout)

    def _drain(self) -> None:
        assert self.proc.stderr is not None  # a pipe: Popen was given stderr=PIPE
        for line in iter(self.proc.stderr.readline, b""):
            self._stderr.append(line)

    def wait_ready(self, timeout: float) -> int:
        """The port from the ready line; kills the process and raises with its stderr if none comes."""
        assert self.proc.stdout is not None  # a pipe: Popen was given stdout=PIPE
        port = read_ready_port(self.proc.stdout, timeout, self.stdout_lines)
        if port is None:
            self.kill()
            raise RuntimeError(f"bridge never became ready; exit={self.proc.poll()} stderr:\n{self.stderr_text()}")
        return port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 5.0) -> int:
        code = self.proc.wait(timeout)
        self._stderr_thread.join(timeout=2)
        return code

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM and wait, as the pool does; SIGKILL if it overstays."""
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                pass
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()
