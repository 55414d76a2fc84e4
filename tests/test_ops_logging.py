"""Observable, and quiet where it matters: structlog lines on stderr (one per
call), nothing but the ready line on stdout, lean startup, thread hygiene."""
from __future__ import annotations

import json

import pytest

from snakepit_bridge.client import Client
from tests.bridge_process import Bridge

OPS = ("--adapter", "tests.handlers_ops")
THREAD_VARS = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS"]


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def json_run():
    """A bridge with JSON logs that served a few calls and was stopped: its stderr lines."""
    with Bridge(*OPS, "--log-format", "json") as b, Client(b.target) as c:
        c.wait_ready()
        assert c.execute("ping", request_id="req-ok").success
        assert not c.execute("no_such_command", request_id="req-bad").success
        chunks = list(c.stream("ping_stream", {"count": 20}, request_id="req-stream"))
        assert len(chunks) == 21
        assert c.execute("ops_stdlib_log", {"n": 7}).success
        assert b.stop() == 0
        return _json_lines(b.stderr_text())


def test_every_stderr_line_is_json(json_run):
    assert json_run and all("event" in line and "level" in line and "timestamp" in line for line in json_run)


@pytest.mark.parametrize("rid,command,outcome", [("req-ok", "ping", "ok"), ("req-bad", "no_such_command", "error"),
                                                 ("req-stream", "ping_stream", "ok")])
def test_one_line_per_call_with_id_command_duration_outcome(json_run, rid, command, outcome):
    lines = [line for line in json_run if line.get("request_id") == rid]
    assert len(lines) == 1, lines  # also for the 21-chunk stream: no per-chunk lines at info
    line = lines[0]
    assert line["event"] == "call" and line["command"] == command and line["outcome"] == outcome
    assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
    if outcome == "error":
        assert line["level"] == "warning" and "no_such_command" in line["error"]


def test_stdlib_logging_is_rendered_as_json_too(json_run):
    lines = [line for line in json_run if line["event"] == "third-party warning 7"]
    assert len(lines) == 1
    assert lines[0]["level"] == "warning" and lines[0]["logger"] == "thirdparty.lib"


def test_lifecycle_lines(json_run):
    events = [line["event"] for line in json_run]
    assert events[0] == "ready" and "shutting down" in events and events[-1] == "stopped"


def test_log_level_warning_drops_call_lines(spawn_bridge):
    b = spawn_bridge("--log-format", "json", "--log-level", "warning")
    with Client(b.target) as c:
        assert c.execute("ping", request_id="quiet").success
        assert not c.execute("no_such_command", request_id="loud").success
    assert b.stop() == 0
    lines = _json_lines(b.stderr_text())
    assert [line["request_id"] for line in lines if line.get("event") == "call"] == ["loud"]
    assert all(line["level"] in ("warning", "error") for line in lines)


def test_stdout_of_a_busy_run_is_exactly_the_ready_line():
    """Handler print()s, handler logs, debug logging and gRPC's own C-core
    tracing all run; stdout still carries only the ready line."""
    env = {"GRPC_VERBOSITY": "debug", "GRPC_TRACE": "api,http"}
    with Bridge(*OPS, "--log-level", "debug", env=env) as b, Client(b.target) as c:
        c.wait_ready()
        assert c.execute("ops_print", {"count": 50}).success
        for _ in range(20):
            list(c.stream("ping_stream", {"count": 5}))
        assert b.stop() == 0
        rest = b.proc.stdout.read().decode()
    assert b.stdout_lines == [f"GRPC_SERVER_READY_ON_PORT={b.port}"]
    assert rest == ""
    stderr = b.stderr_text()
    assert "handler print 49" in stderr and "handler log" in stderr
    assert "grpc_call_start_batch" in stderr or "chttp2" in stderr  # the C-core trace really ran


# -- thread hygiene and lean startup ----------------------------------------------------

def test_blas_threads_default_to_one(spawn_bridge, monkeypatch):
    for name in THREAD_VARS:
        monkeypatch.delenv(name, raising=False)
    b = spawn_bridge(*OPS)
    with Client(b.target) as c:
        got = c.execute("ops_env", {"names": THREAD_VARS}).result
    assert got == {name: "1" for name in THREAD_VARS}


def test_user_set_thread_count_is_kept(spawn_bridge, monkeypatch):
    for name in THREAD_VARS:
        monkeypatch.delenv(name, raising=False)
    b = spawn_bridge(*OPS, env={"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "2"})
    with Client(b.target) as c:
        got = c.execute("ops_env", {"names": THREAD_VARS}).result
    assert got["OMP_NUM_THREADS"] == "4" and got["MKL_NUM_THREADS"] == "2"
    assert got["OPENBLAS_NUM_THREADS"] == "1"


def test_heavy_modules_are_not_imported_at_startup(spawn_bridge):
    heavy = ["numpy", "pandas", "torch", "matplotlib", "scipy"]
    b = spawn_bridge(*OPS)
    with Client(b.target) as c:
        # The first call after startup: nothing has touched numpy yet.
        got = c.execute("ops_modules", {"names": heavy}).result
    assert got == {name: False for name in heavy}


def test_debug_level_adds_per_chunk_lines(spawn_bridge):
    b = spawn_bridge("--log-format", "json", "--log-level", "debug")
    with Client(b.target) as c:
        assert len(list(c.stream("ping_stream", {"count": 5}, request_id="dbg"))) == 6
    assert b.stop() == 0
    lines = [line for line in _json_lines(b.stderr_text()) if line.get("request_id") == "dbg"]
    chunk_lines = [line for line in lines if line["event"] == "chunk"]
    assert [line["index"] for line in chunk_lines] == list(range(6)) and chunk_lines[-1]["is_final"]
    assert all(line["level"] == "debug" for line in chunk_lines)


def test_a_broken_log_pipe_fails_no_call_and_exit_stays_clean():
    """When the pool dies its end of the merged stdout/stderr pipe closes: log
    lines and handler prints are lost, but calls still answer and the exit is 0."""
    import subprocess
    import sys

    from tests.bridge_process import ROOT, SCRIPT

    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--port", "0", *OPS], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        port = int(proc.stdout.readline().decode().split("=")[1])
        proc.stdout.close()  # like :stderr_to_stdout with the reader gone
        with Client(f"127.0.0.1:{port}") as c:
            c.wait_ready()
            assert c.execute("ping", timeout=5).success
            assert c.execute("ops_print", {"count": 3}, timeout=5).success
            assert not c.execute("no_such_command", timeout=5).success  # a warning line, lost
        proc.stdin.close()
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("event", [
    {"timestamp": "2026-12-01T19:53:32.123456Z", "level": "info", "event": "call", "request_id": "12",
     "command": "ping", "duration_ms": 0.052, "outcome": "ok"},
    {"timestamp": "t", "level": "warning", "event": "an event name longer than thirty characters", "n": None,
     "l": [1, "a"], "s": "has space", "q": "it's", "eq": "a=b", "empty": ""},
    {"level": "error", "event": "from the stdlib", "logger": "thirdparty.lib", "x": 1.5},
    {"event": 123},
])
def test_console_lines_look_like_structlogs_console_renderer(event):
    import structlog

    from snakepit_bridge.logging import ConsoleLines

    assert ConsoleLines()(None, "info", dict(event)) == structlog.dev.ConsoleRenderer(colors=False)(None, "info",
                                                                                                    dict(event))


def test_iso_utc_matches_datetime():
    import datetime

    from snakepit_bridge._clock import iso_utc

    for seconds in (0.0, 1.5, 1_764_619_999.999999, 1_764_620_000.000001, 4_102_444_800.25):
        want = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        got = iso_utc(seconds)
        assert got.startswith(want + ".") and got.endswith("Z") and len(got) == 27
        assert abs(float(got[20:26]) / 1e6 - (seconds % 1)) < 2e-6


def test_info_lines_are_held_briefly_and_never_reordered(monkeypatch):
    import io
    import sys

    from snakepit_bridge.logging import HOLD_CHARS, HOLD_SECONDS, HeldLines
    from tests.handlers_ops import wait_until

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    sink = HeldLines()
    sink.info("a")
    sink.debug("b")
    assert err.getvalue() == ""  # held for one batched write
    sink.warning("c")  # a warning goes out at once, after what was held
    assert err.getvalue() == "a\nb\nc\n"
    sink.info("d")
    assert wait_until(lambda: err.getvalue().endswith("c\nd\n"), timeout=HOLD_SECONDS * 30) is not None
    sink.info("x" * HOLD_CHARS)  # past the cap: written now
    assert err.getvalue().endswith("x" * HOLD_CHARS + "\n")
    sink.info("e")
    sink.flush()  # what the exit path does
    assert err.getvalue().endswith("\ne\n")


def test_a_forked_child_logs_without_the_parents_lock_or_lines():
    import os
    import threading

    from snakepit_bridge import logging as bridge_logging

    sink = bridge_logging._sink
    sink.flush()
    sink.info("held in the parent")
    with sink._lock:  # as if another thread were writing at the moment of the fork
        pid = os.fork()
        if pid == 0:  # the child: must not deadlock on the inherited lock, nor repeat the parent's line
            ok = not sink._held and sink._lock.acquire(timeout=2)
            if ok:
                sink._lock.release()
                done = threading.Event()
                threading.Thread(target=lambda: (sink.flush(), done.set()), daemon=True).start()
                ok = done.wait(2)
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    sink.flush()
