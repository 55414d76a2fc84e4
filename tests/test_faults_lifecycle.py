"""The exit guarantees' second round (issue 14, audit of the reaper), against
the real process: stdin hanging up while a handler holds the GIL in C, a
killed reaper, and start-up refusals that must not hang or mislead."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.bridge_process import ROOT, SCRIPT, Bridge
from tests.handlers_ops import alive, wait_until
from tests.stdio_process import StdioBridge
from tests.test_faults_hostile import OPS, _fire, _sigterm_ends_it_in_time, _wait_marker, linux


def _reaper_of(pid: int) -> int:
    """The worker's reaper: its one child running ``python -S -I -c``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[1]) == pid and cmdline[1:4] == [b"-S", b"-I", b"-c"]:
            return int(entry)
    raise AssertionError(f"no reaper below {pid}")


# -- stdin hangs up while the parent lives (Erlang's Port.close) ----------------------------------

@linux
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["grpc", "stdio"])
def test_stdin_closed_ends_worker_while_handler_holds_the_gil_in_c(mode, tmp_path):
    marker = tmp_path / "in-regex"
    bridge = Bridge(*OPS) if mode == "grpc" else StdioBridge(*OPS, protocol="json")
    with bridge as b:
        if mode == "grpc":
            _fire(b.target, "ops_gil_regex", {"marker": str(marker), "child": True})
        else:
            b.request("ops_gil_regex", {"marker": str(marker), "child": True})
        child = _wait_marker(marker)
        started = time.monotonic()
        b.proc.stdin.close()
        b.proc.wait(5)
        took = time.monotonic() - started
        assert took < 1.5, f"took {took:.2f}s\n{b.stderr_text()}"
        assert wait_until(lambda: not alive(child), 1.0) is not None, "the handler's child outlived the worker"
        assert "reason=stdin closed" in b.stderr_text() or '"stdin closed"' in b.stderr_text()


@linux
def test_stdin_hang_up_does_not_cut_short_requests_still_in_the_pipe(tmp_path):
    """The reaper never reads stdin: frames written before the pool closed it
    are all answered (the budget starts once the worker drained the pipe)."""
    with StdioBridge(protocol="json") as b:
        ids = [b.request("echo", {"i": i}) for i in range(50)]
        b.proc.stdin.close()
        got = {b.recv()["id"] for _ in ids}
        assert got == set(ids)
        assert b.wait(5) == 0, b.stderr_text()


# -- a killed reaper is replaced ------------------------------------------------------------------

@linux
@pytest.mark.slow
def test_a_killed_reaper_is_replaced_and_sigterm_still_ends_a_stuck_worker(tmp_path):
    marker = tmp_path / "in-regex"
    with Bridge(*OPS) as b:
        first = _reaper_of(b.pid)
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: "started a new one" in b.stderr_text(), 5.0) is not None, b.stderr_text()
        second = _reaper_of(b.pid)
        assert second != first
        # The old one is reaped, not left a zombie.
        assert wait_until(lambda: not os.path.exists(f"/proc/{first}"), 2.0) is not None
        _fire(b.target, "ops_gil_regex", {"marker": str(marker), "child": True})
        child = _wait_marker(marker)
        _sigterm_ends_it_in_time(b, child)


# -- start-up refusals ----------------------------------------------------------------------------

def _start(*args: str, env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--port", "0", *args], cwd=ROOT, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def test_a_non_ascii_token_is_refused_at_start():
    proc = _start(env={"SNAKEPIT_BRIDGE_AUTH_TOKEN": "séc"})
    err = proc.stderr.decode()
    assert proc.returncode == 3 and "ASCII" in err, err


def test_a_fifo_as_a_start_up_file_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plain = tmp_path / "plain.pem"
    plain.write_text("x")
    for args in (("--tls-cert", str(plain), "--tls-key", str(fifo)), ("--auth-token-file", str(fifo))):
        proc = _start(*args, timeout=15)
        err = proc.stderr.decode()
        assert proc.returncode == 3 and "not a regular file" in err, (args, err)


def test_a_bad_client_ca_exits_3_naming_the_flag(tmp_path):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", "a.key", "-out", "a.pem", "-days", "1", "-subj", "/CN=x"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=30)
    bad = tmp_path / "bad-ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    proc = _start("--tls-cert", str(tmp_path / "a.pem"), "--tls-key", str(tmp_path / "a.key"),
                  "--tls-client-ca", str(bad))
    err = proc.stderr.decode()
    assert proc.returncode == 3 and "--tls-client-ca" in err and "in use" not in err, err


# -- caps: the one reached is named, and the code is in the answer --------------------------------

def test_execute_collecting_one_huge_chunk_names_the_execute_cap(spawn_bridge):
    from snakepit_bridge.client import Client

    # One 5 MB chunk (t_big_stream: a float64 array of that size); built-ins cut their
    # chunks at a byte budget, so a test handler makes the huge one.
    b = spawn_bridge("--adapter", "tests.test_payloads", "--max-execute-mb", "2", "--max-stream-buffer-mb", "4")
    one_huge = {"count": 1, "size": 5 * 1024 * 1024}
    with Client(b.target) as c:
        r = c.execute("t_big_stream", one_huge, timeout=30)
        assert not r.success and "--max-execute-mb" in r.error and "--max-stream-buffer-mb" not in r.error, r.error
        assert r.result.get("code") == "RESOURCE_EXHAUSTED", r.result
        # Streamed, the same chunk passes the streams' budget alone: that cap is named, and why.
        end = list(c.stream("t_big_stream", one_huge, timeout_ms=30000))[-1]
        assert end.is_final and "one chunk of" in end.error and "--max-stream-buffer-mb" in end.error, end.error
        assert end.data.get("code") == "RESOURCE_EXHAUSTED", end.data


def test_a_size_estimate_that_stops_early_extrapolates_upwards():
    from snakepit_bridge._session_state import estimate_size

    value = [{"k": [i]} for i in range(5000)]
    full = estimate_size(value)
    assert estimate_size(value, max_objects=1000) >= full


@pytest.mark.slow
def test_a_value_too_big_to_walk_still_meets_the_session_cap(spawn_bridge):
    """3M empty dicts (~200 MB resident) read as ~88 MB when the walk stopped
    at 1M objects, and were stored under --max-session-mb 100."""
    from snakepit_bridge.client import Client

    b = spawn_bridge("--max-session-mb", "100")
    with Client(b.target) as c:
        r = c.execute_in_session("big", "store", {"key": "k", "value": [{}] * 3_000_000}, timeout=60)
        assert not r.success and "--max-session-mb" in r.error, r.error
        assert r.result.get("code") == "RESOURCE_EXHAUSTED"
