"""Spawn the real ``grpc_bridge.py`` the way a Snakepit pool does, and wait for it.

No sleeps: readiness is the ready line (gRPC) or the answer to the init ping
(stdio), each with a timeout.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "grpc_bridge.py"
READY = "GRPC_SERVER_READY_ON_PORT="


class Bridge:
    """A running bridge process in gRPC mode.

    stdin is a pipe held open (as the pool holds it), stdout is read for the
    ready line, stderr is collected in the background (read ``stderr_text()``).
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 10.0,
                 cwd: Path = ROOT, expect_ready: bool = True) -> None:
        self.args = ["--port", "0", *args] if "--port" not in args else list(args)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *self.args], cwd=cwd, env=full_env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._stderr: list[bytes] = []
        self._stderr_thread = threading.Thread(target=self._drain, args=(self.proc.stderr, self._stderr), daemon=True)
        self._stderr_thread.start()
        self.stdout_lines: list[str] = []
        self.port: int | None = None
        if expect_ready:
            self.port = self.wait_ready(ready_timeout)

    @staticmethod
    def _drain(stream, sink: list[bytes]) -> None:
        for line in iter(stream.readline, b""):
            sink.append(line)

    def wait_ready(self, timeout: float) -> int:
        """Read stdout until the ready line; fail with stderr if it never comes."""
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                data = os.read(self.proc.stdout.fileno(), 4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode()
                    self.stdout_lines.append(text)
                    if text.startswith(READY):
                        return int(text[len(READY):])
        finally:
            sel.close()
        self.kill()
        raise RuntimeError(f"bridge never became ready; exit={self.proc.poll()} stderr:\n{self.stderr_text()}")

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
