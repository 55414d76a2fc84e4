"""Hostile input and stuck handlers, against the real process (issue 14).

Each test reproduces one finding of the hostile review and asserts the
promise that now holds: exit guarantees while a handler holds the GIL in C,
linear-time user patterns, confined file access, byte bounds with
RESOURCE_EXHAUSTED, and the smaller points (deep nesting, TLS mismatch,
token hygiene).
"""
from __future__ import annotations

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


def _sigterm_ends_it_in_time(b, child: int) -> None:
    """SIGTERM: the worker exits within Snakepit's 2 s, and the handler's child dies with it."""
    started = time.monotonic()
    b.signal(signal.SIGTERM)
    b.proc.wait(5)
    took = time.monotonic() - started
    assert took < 2.0, f"took {took:.2f}s\n{b.stderr_text()}"
    assert wait_until(lambda: not alive(child), 1.0) is not None, "the handler's child outlived the worker"


# -- 1. exit guarantees whatever a handler does ---------------------------------------------------

@linux
@pytest.mark.slow
def test_sigterm_ends_grpc_worker_while_handler_holds_the_gil_in_c(tmp_path):
    marker = tmp_path / "in-regex"
    with Bridge(*OPS) as b:
        _fire(b.target, "ops_gil_regex", {"marker": str(marker), "child": True})
        child = _wait_marker(marker)
        Client(b.target).close()
        _sigterm_ends_it_in_time(b, child)
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
        _sigterm_ends_it_in_time(b, child)


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


# -- 3. file access is confined -------------------------------------------------------------------

FILE_CALLS = [
    ("process_large_dataset", "file_path", {}),
    ("tail_and_analyze", "log_path", {"from_beginning": True, "max_matches": 1, "patterns": ["."]}),
    ("batch_inference", "model_path", {"batch_items": ["x"]}),
]


def _file_error(client: Client, command: str, arg: str, path: str, extra: dict) -> str:
    chunks = list(client.stream(command, {arg: path, **extra}, timeout_ms=5000))
    assert chunks[-1].is_final and chunks[-1].error, chunks
    return chunks[-1].error


@pytest.mark.parametrize("command, arg, extra", FILE_CALLS)
def test_without_data_dir_no_file_is_read_and_the_error_names_the_flag(spawn_bridge, tmp_path, command, arg, extra):
    secret = tmp_path / "secret.txt"
    secret.write_text("ERROR top secret\n")
    b = spawn_bridge()
    with Client(b.target) as c:
        for path in (str(secret), str(tmp_path / "missing.txt"), "/etc/passwd"):
            error = _file_error(c, command, arg, path, extra)
            assert "--data-dir" in error and "file access is off" in error, error
            assert "top secret" not in error


@pytest.fixture(scope="module")
def confined(tmp_path_factory):
    """A bridge with one data dir holding a CSV, a FIFO and escaping symlinks."""
    root = tmp_path_factory.mktemp("confined")
    data = root / "data"
    data.mkdir()
    (root / "outside.csv").write_text("a\n1\n")
    (data / "ok.csv").write_text("a\n1\n")
    os.mkfifo(data / "fifo")
    (data / "escape").symlink_to(root / "outside.csv")
    (data / "proc").symlink_to("/proc/self/environ")
    with Bridge("--data-dir", str(data)) as b:
        yield b, data


@pytest.mark.parametrize("command, arg, extra", FILE_CALLS)
def test_paths_outside_the_data_dir_are_refused_before_anything_blocks(confined, command, arg, extra):
    b, data = confined
    cases = {
        "/etc/shadow": "outside the data directories",
        str(data / ".." / "outside.csv"): "outside the data directories",
        str(data / "../../../../../etc/passwd"): "outside the data directories",
        str(data / "escape"): "outside the data directories",
        str(data / "proc"): "/proc, /sys or /dev",
        "/proc/self/environ": "/proc, /sys or /dev",
        "/proc/self/fd/0": "/proc, /sys or /dev",
        str(data / "fifo"): "not a regular file",
        str(data): "is a directory",
    }
    with Client(b.target) as c:
        for path, needle in cases.items():
            started = time.monotonic()
            error = _file_error(c, command, arg, path, extra)
            assert needle in error, (path, error)
            assert time.monotonic() - started < 2.0
        # The same answer whether or not an outside file exists: no existence oracle.
        assert "outside" in _file_error(c, command, arg, "/no/such/file", extra)
        assert c.health(timeout=5).healthy


def test_a_data_dir_that_is_not_a_directory_exits_3(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--port", "0", "--data-dir", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    assert proc.returncode == 3 and "--data-dir" in proc.stderr.decode()


def test_files_inside_the_data_dir_still_work(confined):
    b, data = confined
    with Client(b.target) as c:
        chunks = list(c.stream("process_large_dataset", {"file_path": str(data / "ok.csv")}, timeout_ms=5000))
        assert not chunks[-1].error and chunks[-1].data["final_stats"]["rows_read"] == 1
        # The shipped model needs no --data-dir.
        r = list(c.stream("batch_inference", {"batch_items": ["I love it"]}, timeout_ms=10000))
        assert r[0].data["prediction"] == "positive"


# -- 2. no argument drives a built-in into catastrophic time --------------------------------------

def test_catastrophic_pattern_runs_in_linear_time(confined):
    b, data = confined
    log = data / "app.log"
    log.write_text("a" * 40 + "\n" + "ERROR x\n")
    with Client(b.target) as c:
        started = time.monotonic()
        chunks = list(c.stream("tail_and_analyze", {"log_path": str(log), "from_beginning": True, "max_matches": 1,
                                                    "patterns": ["(a|a)*Q", "ERROR"]}, timeout_ms=10000))
        assert time.monotonic() - started < 2.0
        assert [ch.data.get("line_number") for ch in chunks if ch.data.get("event") == "match"] == [2]
        bad = list(c.stream("tail_and_analyze", {"log_path": str(log), "patterns": ["(a)\\1"]}, timeout_ms=5000))
        assert "RE2 syntax" in bad[-1].error
        many = list(c.stream("tail_and_analyze", {"log_path": str(log), "patterns": ["x"] * 257}, timeout_ms=5000))
        assert "at most 256" in many[-1].error
        huge = list(c.stream("tail_and_analyze", {"log_path": str(log), "patterns": ["x" * 5000]}, timeout_ms=5000))
        assert "at most 4096 characters" in huge[-1].error


def test_size_arguments_are_bounded(client):
    # (ints this big may not decode at all yet; either way a clear error, not minutes of work)
    r = client.execute("compute", {"operation": "multiply", "a": 10**4000, "b": 10**4000})
    assert not r.success and ("too large" in r.error or "cannot be decoded" in r.error), r.error
    r = client.execute("compute", {"operation": "power", "a": 10, "b": 10**9})
    assert not r.success and "too large" in r.error
    chunks = list(client.stream("ping_stream", {"count": 2**40}))
    assert "<= 2147483646" in chunks[-1].error
    assert "make_payload" not in client.info().supported_commands  # test-only: not a built-in


# -- 4. memory bounded in bytes -------------------------------------------------------------------

def test_execute_on_a_stream_stops_at_its_byte_cap(spawn_bridge):
    b = spawn_bridge("--max-execute-mb", "2")
    with Client(b.target) as c:
        started = time.monotonic()
        r = c.execute("process_large_dataset", {"total_rows": 5_000_000, "include_rows": True}, timeout=30)
        assert not r.success and "--max-execute-mb" in r.error and "ExecuteStream" in r.error, r.error
        assert time.monotonic() - started < 10
        assert c.execute("process_large_dataset", {"total_rows": 100}).success  # small ones still collect


def test_unread_streams_share_one_byte_budget(spawn_bridge):
    import psutil

    b = spawn_bridge("--max-stream-buffer-mb", "4", "--adapter", "tests.test_payloads")
    with Client(b.target) as c:
        calls = [c.stream("t_big_stream", {"count": 30, "size": 1024 * 1024}, timeout_ms=30000) for _ in range(8)]
        ends = [list(call)[-1] for call in calls]  # each read only once all are open
        refused = [e for e in ends if "--max-stream-buffer-mb" in e.error]
        assert refused, [e.error for e in ends]
        assert all(e.is_final for e in ends)
        # Without the budget 8 streams x 8 buffered 1 MB chunks would pin 64 MB more.
        assert psutil.Process(b.pid).memory_info().rss < 400 * 1024 * 1024
        assert c.health(timeout=5).healthy


def test_sessions_together_stop_at_their_byte_cap(spawn_bridge):
    b = spawn_bridge("--max-sessions-total-mb", "1")
    with Client(b.target) as c:
        blob = "x" * 400_000
        assert c.execute_in_session("s1", "store", {"key": "k", "value": blob}).success
        assert c.execute_in_session("s2", "store", {"key": "k", "value": blob}).success
        r = c.execute_in_session("s3", "store", {"key": "k", "value": blob})
        assert not r.success and "--max-sessions-total-mb" in r.error, r.error
        assert c.execute_in_session("s1", "end_session").success  # ending one frees its bytes
        assert c.execute_in_session("s3", "store", {"key": "k", "value": blob}).success
        # The worker-global store has a cap by default too.
        assert c.execute("store", {"key": "g", "value": "y" * 700_000}).success is False


def test_pull_generator_arguments_are_capped_together(spawn_bridge):
    b = spawn_bridge("--max-generator-args-mb", "1")
    with Client(b.target) as c:
        first = c.init_generator("echo", {"pad": "x" * 600_000})
        assert first.generator_id and not first.error
        second = c.init_generator("echo", {"pad": "x" * 600_000})
        assert not second.generator_id and "--max-generator-args-mb" in second.error
        c.close_generator(first.generator_id)
        assert c.init_generator("echo", {"pad": "x" * 600_000}).generator_id


# -- 7. the smaller points ------------------------------------------------------------------------

def test_deep_nesting_is_invalid_argument_not_a_crash(bridge):
    from snakepit_bridge._proto import snakepit_pb2 as pb
    from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc

    stub = pb_grpc.SnakepitBridgeStub(grpc.insecure_channel(bridge.target))
    deep = ("[" * 600 + "]" * 600).encode()
    r = stub.Execute(pb.ExecuteRequest(command="echo", args={"x": deep}), timeout=10)
    assert not r.success and "argument 'x'" in r.error and "nested more than 200" in r.error
    assert "Traceback" not in r.error
    assert "RecursionError" not in bridge.stderr_text()
    with StdioBridge(protocol="json") as s:
        rid = s.new_id()
        s.send_raw(b'{"id": %d, "command": "echo", "args": {"x": %s}}' % (rid, deep))
        reply = s.recv()
        assert reply["id"] == rid and not reply["success"] and "nested more than 200" in reply["error"]
        assert reply["error"].startswith("bad frame")


def test_tls_key_that_does_not_match_exits_3_saying_so(tmp_path):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed")
    for name in ("a", "b"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", "/CN=x"],
                       cwd=tmp_path, check=True, capture_output=True, timeout=30)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--port", "0", "--tls-cert", str(tmp_path / "a.pem"),
                           "--tls-key", str(tmp_path / "b.key")], cwd=ROOT, capture_output=True, timeout=20,
                          stdin=subprocess.DEVNULL)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert "do not form a valid pair" in err and "in use" not in err


def test_token_variable_is_stripped_and_an_empty_one_refused(spawn_bridge):
    b = spawn_bridge(env={"SNAKEPIT_BRIDGE_AUTH_TOKEN": "s3cret\n"})
    with Client(b.target, token="s3cret") as c:
        assert c.execute("ping", timeout=5).success
    with Client(b.target) as c:
        with pytest.raises(grpc.RpcError) as info:
            c.execute("ping", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    proc = subprocess.run([sys.executable, str(SCRIPT), "--port", "0"], cwd=ROOT, capture_output=True, timeout=20,
                          stdin=subprocess.DEVNULL, env={**os.environ, "SNAKEPIT_BRIDGE_AUTH_TOKEN": " \n"})
    assert proc.returncode == 3 and "auth token is empty" in proc.stderr.decode()


# -- 5. the event loop never decodes a large request ----------------------------------------------

@pytest.mark.slow
def test_a_million_small_arguments_are_decoded_off_the_loop(bridge):
    """10+ MB of tiny arguments stalled Health for 7.7 s when the offload
    decision counted value bytes only, and still 1.7-2 s while the map was
    copied (dict(), GIL held throughout) before the offload decision. What
    stays on the loop is gRPC's own parse of the message: the bound is
    relative to that parse, timed here in this process (the speed figure
    lives in benchmarks/soak.py). The margin holds on a loaded 2-core machine
    (0.79 s was seen against 2.5x + 0.4 = 0.77 s); the regressions it guards read 1.7-7.7 s."""
    from snakepit_bridge._proto import snakepit_pb2 as pb
    from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc

    request = pb.ExecuteRequest(command="ping", args={f"k{i}": b"1" for i in range(1_000_000)})
    data = request.SerializeToString()
    started = time.perf_counter()
    pb.ExecuteRequest.FromString(data)
    parse = time.perf_counter() - started
    opts = [("grpc.max_send_message_length", 64 << 20)]
    stub = pb_grpc.SnakepitBridgeStub(grpc.insecure_channel(bridge.target, options=opts))
    probe = pb_grpc.SnakepitBridgeStub(grpc.insecure_channel(bridge.target))
    probe.Health(pb.HealthRequest(), timeout=5)
    worst, done = [0.0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            started = time.perf_counter()
            probe.Health(pb.HealthRequest(), timeout=30)
            worst[0] = max(worst[0], time.perf_counter() - started)
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        r = stub.Execute(request, timeout=60)
        assert r.success, r.error
    finally:
        done.set()
        poller.join(35)
    assert worst[0] < 3 * parse + 0.5, f"Health waited {worst[0]:.2f}s; the message parses in {parse:.2f}s"
