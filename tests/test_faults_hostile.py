"""Hostile input and stuck handlers, against the real process (issue 14).

Each test reproduces one finding of the hostile review and asserts the
promise that now holds: exit guarantees while a handler holds the GIL in C,
linear-time user patterns, confined file access, byte bounds with
RESOURCE_EXHAUSTED, and the smaller points (deep nesting, TLS mismatch,
token hygiene).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import pytest

from snakepit_bridge.client import Client
from tests.bridge_process import ROOT, SCRIPT, Bridge
from tests.handlers_ops import alive, wait_until
from tests.stdio_process import StdioBridge

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc, pidfd and prctl")
OPS = ("--adapter", "tests.handlers_ops")


def _fire(target: str, command: str, args: dict, n: int = 1) -> None:
    """Start ``n`` calls of ``command`` in daemon threads (their answers never come)."""
    def call() -> None:
        try:
            with Client(target) as c:
                c.execute(command, args, timeout=30)
        except Exception:  # noqa: BLE001 - the worker is killed under it
            pass

    for _ in range(n):
        threading.Thread(target=call, daemon=True).start()


def _wait_marker(marker, timeout: float = 10.0) -> int:
    assert wait_until(lambda: marker.exists() and marker.read_text() != "", timeout) is not None
    return int(marker.read_text() or 0)


# -- 1. exit guarantees whatever a handler does ---------------------------------------------------

@linux
@pytest.mark.slow
def test_sigterm_ends_grpc_worker_while_handler_holds_the_gil_in_c(tmp_path):
    marker = tmp_path / "in-regex"
    with Bridge(*OPS) as b:
        _fire(b.target, "ops_gil_regex", {"marker": str(marker), "child": True})
        child = _wait_marker(marker)
        Client(b.target).close()
        started = time.monotonic()
        b.signal(signal.SIGTERM)
        b.proc.wait(5)
        took = time.monotonic() - started
        assert took < 2.0, f"took {took:.2f}s\n{b.stderr_text()}"
        assert wait_until(lambda: not alive(child), 1.0) is not None, "the handler's child outlived the worker"
        assert "did not exit in time" in b.stderr_text()


@linux
@pytest.mark.slow
def test_sigterm_ends_stdio_worker_while_handler_holds_the_gil_in_c(tmp_path):
    marker = tmp_path / "in-regex"
    with StdioBridge(*OPS, protocol="json") as b:
        b.request("ops_gil_regex", {"marker": str(marker), "child": True})
        child = _wait_marker(marker)
        started = time.monotonic()
        b.signal()
        b.wait(5)
        took = time.monotonic() - started
        assert took < 2.0, f"took {took:.2f}s\n{b.stderr_text()}"
        assert wait_until(lambda: not alive(child), 1.0) is not None


@linux
@pytest.mark.slow
def test_sigterm_with_four_cpu_bound_threads_exits_in_time(tmp_path):
    with Bridge(*OPS) as b:
        marker = tmp_path / "spawned"
        _fire(b.target, "ops_busy", {}, n=4)
        _fire(b.target, "ops_gil_regex", {"marker": str(marker), "child": True, "n": 10})  # a child to kill
        child = _wait_marker(marker)
        started = time.monotonic()
        b.signal(signal.SIGTERM)
        b.proc.wait(5)
        took = time.monotonic() - started
        assert took < 2.0, f"took {took:.2f}s\n{b.stderr_text()}"
        assert wait_until(lambda: not alive(child), 1.0) is not None


# The parent: start the worker (gRPC or stdio) with pipes it holds, as a pool
# does; have it enter the catastrophic regex; pass on its pid; wait to be killed.
PARENT = textwrap.dedent("""
    import json, struct, subprocess, sys, time
    mode, script, err, marker = sys.argv[1:5]
    extra = ["--port", "0"] if mode == "grpc" else ["--mode", "pool-worker", "--protocol", "json"]
    w = subprocess.Popen([sys.executable, script, *extra, "--adapter", "tests.handlers_ops"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(err, "wb"))
    args = {"marker": marker, "child": True}
    if mode == "grpc":
        port = int(w.stdout.readline().decode().split("=")[1])
        import threading
        from snakepit_bridge.client import Client
        def call():
            try:
                Client(f"127.0.0.1:{port}").execute("ops_gil_regex", args, timeout=60)
            except Exception:
                pass
        threading.Thread(target=call, daemon=True).start()
    else:
        request = json.dumps({"id": 1, "command": "ops_gil_regex", "args": args}).encode()
        w.stdin.write(struct.pack(">I", len(request)) + request)
        w.stdin.flush()
    print(w.pid, flush=True)
    time.sleep(600)
""")


@linux
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["grpc", "stdio"])
def test_parent_death_ends_worker_while_handler_holds_the_gil_in_c(mode, tmp_path):
    marker = tmp_path / "in-regex"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode, str(SCRIPT), str(tmp_path / "w.err"), str(marker)],
                              cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    worker = int(parent.stdout.readline())
    child = None
    try:
        child = _wait_marker(marker)
        parent.kill()
        parent.wait(5)
        gone = wait_until(lambda: not alive(worker), timeout=3.0)
        log = (tmp_path / "w.err").read_text()
        assert gone is not None and gone <= 1.0, f"gone={gone}\n{log}"
        assert wait_until(lambda: not alive(child), 1.0) is not None, "the handler's child outlived the worker"
    finally:
        parent.stdout.close()
        for pid in (worker, child):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
