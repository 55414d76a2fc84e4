"""Spawning the processes under test and reading their cost from /proc.

A gRPC server (the bridge or the bare servicer) is started as a pool starts it:
stdin a pipe held open, stdout read until the ``GRPC_SERVER_READY_ON_PORT=``
line, no sleeps. stderr goes to a temporary file (a pipe nobody drains would
block the server once full) and is shown if the process never gets ready.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from snakepit_bridge.testing import read_ready_port

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = ROOT / "grpc_bridge.py"
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

__all__ = ["Server", "cpu_seconds", "rss_bytes", "bridge_cmd", "bare_grpc_cmd"]


def bridge_cmd(*args: str) -> list[str]:
    return [sys.executable, str(BRIDGE), *args]


def bare_grpc_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.bare_grpc", *args]


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class Server:
    """A server process started with ``cmd`` that announces its port on stdout."""

    def __init__(self, cmd: list[str], *, timeout: float = 20.0, env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.stderr = tempfile.TemporaryFile()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
        )
        self.port = self._wait_ready(timeout)
        #: Seconds from spawn to the ready line.
        self.startup = time.perf_counter() - self.started

    def _wait_ready(self, timeout: float) -> int:
        port = read_ready_port(self.proc.stdout, timeout)
        if port is None:
            self.kill()
            raise RuntimeError(f"{' '.join(self.cmd)} never became ready:\n{self.stderr_text()[-2000:]}")
        return port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        """SIGTERM as the pool does; SIGKILL if it overstays."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()
        self.stderr.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
