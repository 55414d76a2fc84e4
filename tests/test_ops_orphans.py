"""No orphans: the bridge dies with its parent and takes its children along.

Each test starts a small intermediate Python process that spawns the real
bridge (as a pool would), then SIGKILLs that parent and watches the bridge and
a grandchild a handler spawned disappear.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge.client import Client, encode_args
from tests.bridge_process import ROOT, SCRIPT, Bridge
from tests.handlers_ops import alive, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and prctl")

# The parent: spawn the bridge with stdin a pipe it holds (or /dev/null), pass
# on the ready line with the bridge's pid, then wait to be killed.
PARENT = textwrap.dedent("""
    import json, subprocess, sys, time
    stdin = subprocess.PIPE if sys.argv[1] == "pipe" else subprocess.DEVNULL
    bridge = subprocess.Popen([sys.executable, sys.argv[2], "--port", "0", "--adapter", "tests.handlers_ops", *sys.argv[4:]],
                              stdin=stdin, stdout=subprocess.PIPE, stderr=open(sys.argv[3], "wb"))
    line = bridge.stdout.readline().decode()
    print(json.dumps({"pid": bridge.pid, "line": line.strip()}), flush=True)
    time.sleep(600)
""")


def _start_parent(stdin_kind: str, tmp_path, *args: str) -> tuple[subprocess.Popen, int, int]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, stdin_kind, str(SCRIPT), str(tmp_path / "bridge.err"), *args],
                              cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    info = json.loads(parent.stdout.readline())
    assert info["line"].startswith("GRPC_SERVER_READY_ON_PORT="), info
    return parent, info["pid"], int(info["line"].split("=")[1])


@pytest.mark.parametrize("stdin_kind", ["pipe", "devnull"])
def test_parent_sigkill_takes_bridge_and_its_children(stdin_kind, tmp_path):
    """pipe: EOF on stdin is the signal. devnull: stdin is not watched, so the
    parent-death signal / parent-pid poll must do it."""
    parent, bridge_pid, port = _start_parent(stdin_kind, tmp_path)
    try:
        with Client(f"127.0.0.1:{port}") as c:
            c.wait_ready()
            grandchild = c.execute("ops_spawn_child").result["pid"]
        assert alive(bridge_pid) and alive(grandchild)
        parent.kill()
        parent.wait(5)
        gone = wait_until(lambda: not alive(bridge_pid) and not alive(grandchild), timeout=3.0)
        log = (tmp_path / "bridge.err").read_text()
        assert gone is not None, f"bridge alive={alive(bridge_pid)} grandchild alive={alive(grandchild)}\n{log}"
        assert gone < 2.0, f"took {gone:.2f}s"
        assert "parent died" in log or "stdin closed" in log
    finally:
        for pid in (bridge_pid, locals().get("grandchild")):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_no_parent_watch_outlives_its_parent(tmp_path):
    """--no-parent-watch is for supervisors other than the pool: the bridge stays."""
    parent, bridge_pid, port = _start_parent("pipe", tmp_path, "--no-parent-watch")
    try:
        parent.kill()
        parent.wait(5)
        assert wait_until(lambda: not alive(bridge_pid), timeout=1.0) is None
        with Client(f"127.0.0.1:{port}") as c:
            assert c.execute("ping", timeout=5).success
    finally:
        os.kill(bridge_pid, signal.SIGTERM)
    assert wait_until(lambda: not alive(bridge_pid), timeout=3.0) is not None


def test_parent_thread_ending_is_not_parent_death():
    """Linux sends the parent-death signal when the *thread* that forked us
    ends; the bridge must notice its parent process lives and keep serving."""
    box: dict[str, Bridge] = {}
    t = threading.Thread(target=lambda: box.setdefault("b", Bridge("--adapter", "tests.handlers_ops",
                                                                   "--log-level", "debug")))
    t.start()
    t.join(15)
    with box["b"] as b, Client(b.target) as c:
        c.wait_ready()
        # The signal did arrive (so the scenario is real) and was recognised as a thread ending.
        assert wait_until(lambda: "its thread ended" in b.stderr_text(), timeout=3.0) is not None
        # The parent-pid poll runs every 0.25 s; several rounds pass meanwhile.
        assert wait_until(lambda: b.proc.poll() is not None, timeout=1.0) is None
        assert c.execute("ops_pid").result["ppid"] == os.getpid()
        assert "parent died" not in b.stderr_text()


def test_devnull_stdin_is_not_eof(tmp_path):
    """stdin = /dev/null (CI, `nohup`) reads EOF at once; it must not stop the bridge."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--port", "0"], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = int(proc.stdout.readline().decode().split("=")[1])
        with Client(f"127.0.0.1:{port}") as c:
            c.wait_ready()
            assert wait_until(lambda: proc.poll() is not None, timeout=0.8) is None
            assert c.execute("ping").success
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


def test_sigterm_terminates_children_a_handler_spawned(spawn_bridge):
    b = spawn_bridge("--adapter", "tests.handlers_ops")
    with Client(b.target) as c:
        kids = [c.execute("ops_spawn_child").result["pid"] for _ in range(3)]
    assert all(alive(k) for k in kids)
    assert b.stop() == 0
    assert wait_until(lambda: not any(alive(k) for k in kids), timeout=2.0) is not None
    assert "children_terminated=3" in b.stderr_text()


def test_stdio_mode_takes_its_children_on_eof():
    """pool-worker mode: EOF on stdin ends the worker and the children it started."""
    import struct

    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--mode", "pool-worker", "--protocol", "json",
                             "--adapter", "tests.handlers_ops"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    request = json.dumps({"id": 1, "command": "ops_spawn_child", "args": {}}).encode()
    proc.stdin.write(struct.pack(">I", len(request)) + request)
    proc.stdin.flush()
    (size,) = struct.unpack(">I", proc.stdout.read(4))
    reply = json.loads(proc.stdout.read(size))
    assert reply["success"], reply
    grandchild = reply["result"]["pid"]
    try:
        assert alive(grandchild)
        proc.stdin.close()
        assert proc.wait(5) == 0
        assert wait_until(lambda: not alive(grandchild), timeout=2.0) is not None
    finally:
        if alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_parent_death_is_noticed_while_a_handler_blocks_the_event_loop(tmp_path):
    """The watchers are threads and a plain signal handler, not loop callbacks."""
    parent, bridge_pid, port = _start_parent("pipe", tmp_path)
    marker = tmp_path / "hogging"
    try:
        with Client(f"127.0.0.1:{port}") as c:
            c.wait_ready()
            # Held, not read: a future that is garbage-collected cancels its call.
            _call = c.stub.Execute.future(pb.ExecuteRequest(command="ops_hog_loop", args=encode_args({"marker": str(marker)})[0]))
            assert wait_until(marker.exists, 5) is not None
            parent.kill()
            parent.wait(5)
            gone = wait_until(lambda: not alive(bridge_pid), timeout=3.0)
        assert gone is not None and gone < 2.0, (tmp_path / "bridge.err").read_text()
    finally:
        if alive(bridge_pid):
            os.kill(bridge_pid, signal.SIGKILL)
