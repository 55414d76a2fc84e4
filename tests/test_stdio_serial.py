"""The stdio worker's serial front end (transports/_serial.py), on the real process.

The worker starts serving with blocking reads and answers inline serial
requests without an event loop; the first frame that needs more hands over to
the asyncio server, with whatever was read but not served. These tests drive
that hand-over with real framed bytes: what is answered, in what order, and
how the worker ends while still in the serial phase.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.handlers_ops import alive, wait_until
from tests.stdio_process import SCRIPT, StdioBridge, encode, frame

NEGOTIATION = {"type": "protocol_negotiation", "supported": ["msgpack", "json"], "preferred": "msgpack",
               "timestamp": "2026-01-01T00:00:00Z"}
HANDOVER = "serial front end hands over to the event loop"


def _request(rid: int, command: str, args: dict, protocol: str, **extra: object) -> bytes:
    return frame(encode({"id": rid, "command": command, "args": args, "timestamp": "2026-01-01T00:00:00Z", **extra},
                        protocol))


@pytest.mark.parametrize("preferred", ["json", "msgpack"])
def test_negotiated_ping_then_a_thread_call_then_a_stream(preferred):
    negotiation = {**NEGOTIATION, "preferred": preferred}
    with StdioBridge("--log-level", "debug", negotiate=negotiation) as b:
        assert b.selected["protocol"] == preferred
        assert b.call("ping", {"x": 1})["result"]["message"] == "pong"
        assert b.call("compute", {"operation": "add", "a": 2, "b": 3})["result"]["result"] == 5
        # echo runs in a worker thread: the first frame the front end cannot answer.
        assert b.call("echo", {"i": 7})["result"]["echoed"] == {"i": 7}
        assert b.wait_stderr(HANDOVER)
        handover = next(line for line in b.stderr_text().splitlines() if HANDOVER in line)
        assert "(echo) is not an inline call" in handover  # not the negotiation, ping or compute before it
        chunks = b.stream("ping_stream", {"count": 3, "interval": 0})
        assert [c["chunk_index"] for c in chunks] == [0, 1, 2, 3]
        assert [c["is_final"] for c in chunks][-1] is True
        assert b.call("ping")["success"] is True
        # One set of counters across both phases: init ping, ping, compute, echo, ping_stream, ping, info.
        assert b.call("info")["result"]["total_requests"] == 7
        b.close_stdin()
        assert b.wait() == 0
        assert b.stderr_text().count(HANDOVER) == 1


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
@pytest.mark.parametrize("opt_in", [{"stream": True}, {"pipeline": True}, {"timeout_ms": 5000},
                                    {"session_id": "s1"}])
def test_an_opt_in_on_an_inline_command_hands_over(protocol, opt_in):
    with StdioBridge("--log-level", "debug", protocol=protocol) as b:
        rid = b.request("ping", {}, **opt_in)
        reply = b.recv()
        assert reply["id"] == rid
        if "stream" in opt_in:
            assert reply["chunk_index"] == 0 and reply["is_final"] is True
            assert reply["chunk"]["message"] == "pong"
        else:
            assert reply["success"] is True and reply["result"]["message"] == "pong"
        assert b.wait_stderr(HANDOVER)
        assert "asks for stream, pipeline, timeout_ms or a session" in b.stderr_text()


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_bytes_read_ahead_at_the_hand_over_are_served_in_order(protocol):
    with StdioBridge("--log-level", "debug", protocol=protocol) as b:
        # One write: a ping (front end), an echo (hands over), a ping and half
        # of a compute, whose header and payload are split across writes.
        compute = _request(4, "compute", {"operation": "multiply", "a": 6, "b": 7}, protocol)
        b.send_bytes(_request(1, "ping", {}, protocol) + _request(2, "echo", {"n": 2}, protocol)
                     + _request(3, "ping", {}, protocol) + compute[:2])
        assert [b.recv()["id"] for _ in range(3)] == [1, 2, 3]
        b.send_bytes(compute[2:9])
        b.send_bytes(compute[9:])
        reply = b.recv()
        assert reply["id"] == 4 and reply["result"]["result"] == 42
        assert b.wait_stderr(HANDOVER)
        assert "(echo) is not an inline call" in b.stderr_text()


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_a_frame_split_across_reads_in_the_serial_phase(protocol):
    with StdioBridge("--log-level", "debug", protocol=protocol) as b:
        ping = _request(9, "ping", {"worker_id": "w"}, protocol)
        b.send_bytes(ping[:3])
        b.send_bytes(ping[3:10])
        b.send_bytes(ping[10:])
        reply = b.recv()
        assert reply["id"] == 9 and reply["result"]["worker_id"] == "w"
        b.close_stdin()
        assert b.wait() == 0
        assert HANDOVER not in b.stderr_text()


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_a_large_answer_in_the_serial_phase(protocol):
    # 200 KB in and out: within the front end's read buffer, over the size written in one piece.
    with StdioBridge("--log-level", "debug", protocol=protocol) as b:
        reply = b.call("ping", {"worker_id": "y" * 200_000})
        assert reply["success"] is True and reply["result"]["worker_id"] == "y" * 200_000
        assert b.call("ping")["success"] is True
        b.close_stdin()
        assert b.wait() == 0
        assert HANDOVER not in b.stderr_text()
        assert b.stray is None


def test_frames_that_straddle_the_end_of_the_read_buffer():
    # Two 150 KB frames in one write: the second one starts 150 KB into the
    # 256 KiB buffer and is moved to its start to be read whole.
    with StdioBridge("--log-level", "debug") as b:
        b.send_bytes(_request(1, "ping", {"worker_id": "a" * 150_000}, "json")
                     + _request(2, "ping", {"worker_id": "b" * 150_000}, "json"))
        first, second = b.recv(), b.recv()
        assert (first["id"], first["result"]["worker_id"]) == (1, "a" * 150_000)
        assert (second["id"], second["result"]["worker_id"]) == (2, "b" * 150_000)
        b.close_stdin()
        assert b.wait() == 0
        assert HANDOVER not in b.stderr_text()


def test_a_frame_at_the_read_buffer_size_is_handed_over_whole():
    # 300 KB of arguments: more than the front end's read buffer.
    with StdioBridge("--log-level", "debug") as b:
        reply = b.call("ping", {"worker_id": "x" * 300_000})
        assert reply["success"] is True and reply["result"]["worker_id"] == "x" * 300_000
        assert b.wait_stderr(HANDOVER)
        assert "a frame of" in b.stderr_text()
        assert b.call("ping")["success"] is True


def test_eof_in_the_serial_phase_exits_cleanly():
    with StdioBridge(negotiate=NEGOTIATION) as b:
        assert b.call("ping")["success"] is True
        b.close_stdin()
        assert b.wait() == 0
        text = b.stderr_text()
        assert "stdin closed" in text and "stopped" in text


def test_eof_inside_a_frame_in_the_serial_phase_is_reported():
    with StdioBridge() as b:
        b.send_bytes(_request(5, "ping", {}, "json")[:-3])
        b.close_stdin()
        assert b.wait() == 0
        assert "stdin closed inside a frame" in b.stderr_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_in_the_serial_phase_interrupts_the_blocking_read(sig):
    with StdioBridge() as b:
        assert b.call("ping")["success"] is True
        b.signal(sig)
        assert b.wait(timeout=1.5) == 0  # at once: nothing is in flight, no grace is waited out
        assert f"signal {sig.name}" in b.stderr_text()


def test_info_level_logs_each_serial_call():
    with StdioBridge("--log-level", "info") as b:
        b.call("ping", id=41)
        b.call("compute", {"operation": "divide", "a": 1, "b": 0}, id=42)
        assert b.wait_stderr("request_id=41")
        assert b.wait_stderr("request_id=42")
        failed = next(line for line in b.stderr_text().splitlines() if "request_id=42" in line)
        assert "outcome=error" in failed
        assert b.call("info")["result"]["total_errors"] == 1


# The parent: spawn the stdio bridge with stdin the pipe the test holds (so
# no EOF comes when the parent dies), stdout and stderr to files, print its
# pid, then wait to be killed.
PARENT = """
import json, subprocess, sys, time
bridge = subprocess.Popen([sys.executable, sys.argv[1], "--mode", "pool-worker", "--protocol", "json"],
                          stdin=int(sys.argv[2]), stdout=open(sys.argv[3], "wb"), stderr=open(sys.argv[4], "wb"),
                          pass_fds=(int(sys.argv[2]),))
print(json.dumps({"pid": bridge.pid}), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the parent-death signal")
def test_parent_death_in_the_serial_phase_interrupts_the_blocking_read(tmp_path):
    read_end, write_end = os.pipe()
    out, err = tmp_path / "out", tmp_path / "err"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(SCRIPT), str(read_end), str(out), str(err)],
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, pass_fds=(read_end,))
    os.close(read_end)
    pid = json.loads(parent.stdout.readline())["pid"]
    try:
        os.write(write_end, _request(1, "ping", {}, "json"))
        assert wait_until(lambda: out.stat().st_size > 4, 10) is not None  # answered: now blocked in a read
        parent.kill()
        parent.wait(5)
        gone = wait_until(lambda: not alive(pid), timeout=3.0)
        # Normally the parent-death SIGHUP interrupts the read; should the
        # parent-pid poll see it first, the watchdog ends the worker 0.6 s later.
        assert gone is not None and gone < 2.0, err.read_text()
        assert "parent died" in err.read_text()
    finally:
        os.close(write_end)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def _imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_the_serial_phase_runs_without_asyncio_and_structlog():
    # Start-up (issue 13): the negotiation and inline requests are answered
    # before asyncio is imported (it comes with the hand-over), and at
    # warning nothing imports structlog. The reaper's subprocess import comes
    # after the first answer: once its line is read, every line written
    # before that answer has been read too.
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    with StdioBridge("--log-level", "warning", negotiate=NEGOTIATION, env=env) as b:
        assert b.wait_stderr("| subprocess\n")
        for _ in range(3):
            assert b.call("ping")["success"] is True
        loaded = _imported(b.stderr_text())
        assert "snakepit_bridge.transports._serial" in loaded
        # (asyncio loads lazily, so importtime lists its submodules, not itself.)
        assert not [name for name in loaded if name.split(".")[0] in ("asyncio", "structlog", "grpc")]
        assert b.call("echo", {"i": 1})["result"]["echoed"] == {"i": 1}  # a worker thread: the hand-over
        assert b.wait_stderr("asyncio.base_events\n")
        assert "structlog" not in _imported(b.stderr_text())


@pytest.mark.parametrize("first", [True, False])
def test_a_frame_nested_too_deep_for_the_parser_is_a_bad_frame_not_a_crash(first):
    """A big integer sends the text to the stdlib's parser, which raises
    RecursionError on deep nesting: that must be the clear bad-frame answer
    (first frame or later), and the worker goes on serving."""
    payload = (b'{"id":1,"command":"ping","args":{"x":' + b"[" * 5000 + b"1234567890123456789012"
               + b"]" * 5000 + b"}}")
    with StdioBridge(init=not first) as b:
        b.send_raw(payload)
        reply = json.loads(b.recv_raw())
        assert reply.get("success") is False and "nested too deeply" in json.dumps(reply), reply
        assert b.call("ping").get("success") is True
        assert b.proc.poll() is None


def test_a_json_worker_on_a_plain_launch_line_imports_neither_msgpack_nor_argparse():
    # Start-up (issue 13): argparse's parser is not built for Snakepit's launch
    # line (cli._plain), and msgpack loads on first use (a MessagePack codec).
    negotiate = {**NEGOTIATION, "supported": ["json"], "preferred": "json"}
    with StdioBridge("--log-level", "warning", negotiate=negotiate, env={"PYTHONPROFILEIMPORTTIME": "1"}) as b:
        assert b.wait_stderr("| subprocess\n")
        assert b.call("ping")["success"] is True
        loaded = _imported(b.stderr_text())
        assert "snakepit_bridge.transports._serial" in loaded
        assert not [name for name in loaded if name.split(".")[0] in ("msgpack", "argparse")]
