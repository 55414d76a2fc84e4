"""The stdin/stdout protocol (CONTRACT.md §4) against the real worker process.

Every test spawns ``grpc_bridge.py --mode pool-worker`` (or a priv/ shim) and
speaks 4-byte-length frames to it, as Snakepit's GenericPythonV2 and
GenericPythonMsgpack adapters do.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import msgpack
import pytest

from snakepit_bridge.transports.stdio import MAX_IN_FLIGHT
from tests.handlers_ops import alive, wait_until
from tests.stdio_process import PRIV, ROOT, SCRIPT, StdioBridge, decode, frame, split_frames

ADAPTER = ("--adapter", "tests.stdio_process")
OPS = ("--adapter", "tests.handlers_ops")
NEGOTIATION = {"type": "protocol_negotiation", "supported": ["msgpack", "json"], "preferred": "msgpack",
               "timestamp": "2026-01-01T00:00:00.000000Z"}
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
RESPONSE_OK = {"id", "success", "result", "timestamp"}
RESPONSE_ERROR = {"id", "success", "error", "timestamp"}
CHUNK = {"id", "chunk", "chunk_index", "is_final", "error", "timestamp"}


@pytest.fixture(scope="module", params=["json", "msgpack"])
def sb(request):
    """A worker with the test commands, per protocol, shared by the module."""
    with StdioBridge(*ADAPTER, protocol=request.param) as b:
        yield b


# -- negotiation and launch ---------------------------------------------------------------


def test_negotiation_selects_preferred_msgpack_then_speaks_it():
    with StdioBridge(negotiate=NEGOTIATION) as b:
        assert b.selected["type"] == "protocol_selected"
        assert b.selected["protocol"] == "msgpack"
        assert ISO.match(b.selected["timestamp"])
        b.request("echo", {"x": 1})
        payload = b.recv_raw()
        assert payload[:1] != b"{"
        assert msgpack.unpackb(payload)["result"]["echoed"] == {"x": 1}


def test_negotiation_falls_back_to_first_common_protocol():
    offer = {**NEGOTIATION, "supported": ["yaml", "json"], "preferred": "yaml"}
    with StdioBridge(negotiate=offer) as b:
        assert b.selected["protocol"] == "json"
        assert b.call("ping")["success"] is True


def test_negotiation_without_common_protocol_exits_with_protocol_code():
    offer = {**NEGOTIATION, "supported": ["yaml"], "preferred": "yaml"}
    with StdioBridge(negotiate=offer, init=False) as b:
        assert b.selected["type"] == "protocol_error"
        assert "yaml" in b.selected["error"]
        assert b.wait(5) == 5
        assert "protocol negotiation failed" in b.stderr_text()


def test_negotiation_is_answered_with_the_fixed_protocol():
    with StdioBridge(init=False, protocol="json") as b:
        b.send_raw(json.dumps(NEGOTIATION).encode())
        selected = json.loads(b.recv_raw())
        assert (selected["type"], selected["protocol"]) == ("protocol_selected", "json")
        assert b.call("ping", {"worker_id": "w", "initialization": True})["success"] is True


def test_first_frame_without_negotiation_is_served_by_its_look():
    # No --protocol and no negotiation frame: a JSON request is recognised as JSON.
    argv = [sys.executable, str(ROOT / "grpc_bridge.py"), "--mode", "pool-worker"]
    proc = subprocess.run(argv, input=frame(b'{"id":7,"command":"ping","args":{}}'), capture_output=True,
                          timeout=20, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()
    (reply,) = split_frames(proc.stdout)
    assert json.loads(reply)["id"] == 7 and json.loads(reply)["success"] is True


def test_regular_files_as_stdin_and_stdout(tmp_path):
    # Not pipes: asyncio cannot poll them, so the worker reads and writes in a thread.
    requests = b"".join(frame(json.dumps({"id": i, "command": "echo", "args": {"i": i}}).encode()) for i in range(50))
    (tmp_path / "in").write_bytes(requests)
    with open(tmp_path / "in", "rb") as stdin, open(tmp_path / "out", "wb") as stdout:
        proc = subprocess.run([sys.executable, str(ROOT / "grpc_bridge.py"), "--mode", "pool-worker", "--protocol",
                               "json", "--quiet"], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=20,
                              cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()
    replies = [json.loads(p) for p in split_frames((tmp_path / "out").read_bytes())]
    assert [r["result"]["echoed"]["i"] for r in replies] == list(range(50))


def test_generic_bridge_v2_shim_defaults_to_pool_worker_mode():
    with StdioBridge(negotiate=NEGOTIATION, script=PRIV / "generic_bridge_v2.py", mode_flag=False, cwd=PRIV) as b:
        assert b.protocol == "msgpack"
        reply = b.call("compute", {"operation": "add", "a": 2, "b": 3})
        assert reply["result"]["result"] == 5
        b.close_stdin()
        assert b.wait(5) == 0


def test_priv_grpc_bridge_shim_serves_stdio_and_grpc():
    with StdioBridge("--quiet", protocol="msgpack", script=PRIV / "grpc_bridge.py", cwd=PRIV) as b:
        assert b.call("echo", {"k": "v"})["result"]["echoed"] == {"k": "v"}
    # gRPC mode through the same shim: the ready line comes first.
    proc = subprocess.Popen([sys.executable, str(PRIV / "grpc_bridge.py"), "--port", "0"], cwd=PRIV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(15)
    try:
        assert lines and lines[0].startswith(b"GRPC_SERVER_READY_ON_PORT="), lines
    finally:
        proc.kill()
        proc.wait(5)
        proc.stdin.close()
        proc.stdout.close()


# -- requests and responses -----------------------------------------------------------------


def test_init_ping_and_response_shape(sb):
    reply = sb.call("ping", {"worker_id": "pool_worker_1", "initialization": True}, id=4242)
    assert set(reply) == RESPONSE_OK
    assert reply["id"] == 4242 and reply["success"] is True
    assert reply["result"]["worker_id"] == "pool_worker_1"
    assert ISO.match(reply["timestamp"])


def test_unknown_command_and_handler_error_are_errors(sb):
    reply = sb.call("no_such_command")
    assert set(reply) == RESPONSE_ERROR and reply["success"] is False
    assert "no_such_command" in reply["error"]
    reply = sb.call("t_fail", {"message": "kaput"})
    assert reply["success"] is False and "kaput" in reply["error"] and "RuntimeError" in reply["error"]
    assert sb.call("ping")["success"] is True


def test_ids_are_echoed_as_sent(sb):
    for rid in (0, 1, 2**53, 2**63 - 1, "abc-1"):
        assert sb.call("ping", id=rid)["id"] == rid


def test_streaming_command_without_opt_in_returns_collected_chunks(sb):
    reply = sb.call("ping_stream", {"count": 3})
    assert reply["success"] is True
    assert reply["result"]["chunk_count"] == 3
    assert [c["ping_number"] for c in reply["result"]["chunks"]] == [1, 2, 3]


def test_stream_opt_in_sends_chunks_ending_with_one_final(sb):
    chunks = sb.stream("ping_stream", {"count": 3})
    assert all(set(c) == CHUNK for c in chunks)
    assert [c["chunk_index"] for c in chunks] == [0, 1, 2, 3]
    assert [c["is_final"] for c in chunks] == [False, False, False, True]
    assert [c["chunk"].get("ping_number") for c in chunks] == [1, 2, 3, None]
    assert all(c["error"] is None and ISO.match(c["timestamp"]) for c in chunks)


def test_stream_that_fails_ends_with_a_final_error_chunk(sb):
    chunks = sb.stream("t_stream_fail")
    assert [c["is_final"] for c in chunks] == [False, True]
    assert chunks[0]["chunk"] == {"n": 1}
    assert "stream broke on purpose" in chunks[-1]["error"]


def test_stream_opt_in_on_unary_command_is_one_final_chunk(sb):
    (chunk,) = sb.stream("echo", {"a": [1, 2]})
    assert chunk["is_final"] is True and chunk["chunk"]["echoed"] == {"a": [1, 2]}


def test_timeout_ms_cuts_a_call_off(sb):
    reply = sb.call("t_sleep", {"seconds": 5}, timeout_ms=100)
    assert reply["success"] is False and "deadline" in reply["error"]


# -- values -----------------------------------------------------------------------------------


def test_values_json_cannot_carry_as_is(sb):
    value = lambda kind: sb.call("t_value", {"kind": kind})  # noqa: E731
    assert value("bytes_utf8")["result"]["value"] == ("héllo" if sb.protocol == "json" else "héllo".encode())
    binary = value("bytes_binary")["result"]["value"]
    if sb.protocol == "json":
        import base64

        assert base64.b64decode(binary["__base64__"]) == bytes(range(256))
    else:
        assert binary == bytes(range(256))
    assert value("ndarray")["result"]["value"] == [[0, 1, 2], [3, 4, 5]]
    assert value("float_array")["result"]["value"] == [0.5, 1.5]
    assert value("np_scalar")["result"]["value"] == 2.5
    assert value("set")["result"]["value"] == [3]
    unencodable = value("object")
    assert unencodable["success"] is False and "cannot be" in unencodable["error"]
    huge = value("huge_int")
    if sb.protocol == "json":
        assert huge["result"]["value"] == 2**70
    else:
        assert huge["success"] is False and "msgpack" in huge["error"]
    assert sb.call("ping")["success"] is True


def test_one_megabyte_echo(sb):
    text = "x" * (1 << 20)
    assert sb.call("echo", {"text": text})["result"]["echoed"]["text"] == text
    blob = sb.call("t_blob", {"size": 1 << 20})["result"]["blob"]
    assert len(blob) == 1 << 20


def test_msgpack_str_that_is_not_utf8_arrives_as_bytes():
    # Elixir's Msgpax packs every binary as str, also non-UTF-8 ones.
    with StdioBridge(protocol="msgpack") as b:
        bad_str = b"\xa4\xff\xfe\x00\x01"  # str8 header (fixstr, 4 bytes) + invalid UTF-8
        payload = (b"\x83" + msgpack.packb("id") + msgpack.packb(9) + msgpack.packb("command") + msgpack.packb("echo")
                   + msgpack.packb("args") + b"\x81" + msgpack.packb("blob") + bad_str)
        b.send_raw(payload)
        reply = b.recv()
        assert reply["id"] == 9 and reply["result"]["echoed"]["blob"] == b"\xff\xfe\x00\x01"


def test_json_integers_beyond_64_bits_stay_exact():
    # orjson alone would turn them into floats (1.2345678901234568e+29).
    big = 123456789012345678901234567890
    with StdioBridge(protocol="json") as b:
        b.send_raw(b'{"id": 5, "command": "echo", "args": {"n": %d, "neg": -%d}}' % (big, big))
        raw = b.recv_raw()
        assert b'"n":%d' % big in raw and b'"neg":-%d' % big in raw
        assert json.loads(raw)["result"]["echoed"] == {"n": big, "neg": -big}
        # An id that wide is echoed exactly too.
        b.send_raw(b'{"id": %d, "command": "ping", "args": {}}' % big)
        assert json.loads(b.recv_raw())["id"] == big


# -- bad input --------------------------------------------------------------------------------


def test_bad_json_frames_get_errors_or_are_logged_and_serving_goes_on():
    with StdioBridge(protocol="json") as b:
        b.send_raw(b'{"args": {"id": 1}, "id": 77, "command": "echo", oops')
        reply = b.recv()
        assert reply["id"] == 77 and reply["success"] is False and "bad frame" in reply["error"]
        b.send_raw(b"\x00\xff garbage without an id")
        b.send_raw(b"")
        b.send_raw(b"[1, 2, 3]")
        b.send_raw(b'{"id": true, "command": "ping"}')
        b.send_raw(b'{"id": 78, "command": "echo", "args": [1]}')
        reply = b.recv()
        assert reply["id"] == 78 and "'args' must be a map" in reply["error"]
        b.send_raw(b'{"id": 79, "args": {}}')
        assert "'command'" in b.recv()["error"]
        b.send_raw(b'{"id": 80, "command": "ping", "stream": "yes"}')
        assert "'stream'" in b.recv()["error"]
        assert b.call("ping")["success"] is True
        assert b.wait_stderr("no request id to answer", count=4)
        assert b.stderr_text().count("no request id to answer") == 4


def test_bad_msgpack_frames_get_errors_or_are_logged():
    with StdioBridge(protocol="msgpack") as b:
        truncated = msgpack.packb({"id": 55, "command": "echo", "args": {"x": "y" * 50}})[:-10]
        b.send_raw(truncated)
        reply = b.recv()
        assert reply["id"] == 55 and "bad frame" in reply["error"]
        b.send_raw(b"\xc1\xc1\xc1")  # never-used type byte
        b.send_raw(msgpack.packb([1, 2]))
        assert b.call("ping")["success"] is True
        assert b.wait_stderr("no request id to answer", count=2)
        assert b.stderr_text().count("no request id to answer") == 2


def test_bad_msgpack_frame_error_says_what_is_wrong():
    with StdioBridge(protocol="msgpack") as b:
        b.send_raw(b"\x82\xa2id\x0c\xa7command\xc1")  # id 12, then a never-used type byte
        reply = b.recv()
        assert reply["id"] == 12 and "invalid MessagePack: " in reply["error"]
        assert reply["error"].split("invalid MessagePack: ", 1)[1].strip()


def test_oversized_frame_exits_with_protocol_code():
    with StdioBridge("--max-message-mb", "1", protocol="json") as b:
        b.send_bytes((3 << 20).to_bytes(4, "big") + b"{")
        assert b.wait(5) == 5
        assert "frame larger than the message limit" in b.stderr_text()
        assert "3145728" in b.stderr_text()


def test_truncated_frame_at_eof_exits_cleanly():
    with StdioBridge(protocol="json") as b:
        b.send_bytes(frame(b'{"id": 1, "command": "ping", "args": {}}')[:-5])
        b.close_stdin()
        assert b.wait(5) == 0
        assert "stdin closed inside a frame" in b.stderr_text()


# -- stdout hygiene and lifecycle ---------------------------------------------------------------


def test_stdout_carries_only_frames():
    with StdioBridge(*ADAPTER, protocol="msgpack") as b:
        assert b.call("t_noisy")["result"] == {"ok": True}
        assert b.call("t_input")["result"] == {"read": ""}
        b.call("t_fail")
        b.call("nope")
        b.send_raw(b"\xc1 not msgpack")
        assert len(b.stream("ping_stream", {"count": 5})) == 6
        b.call("echo", {"blob": b"\x00" * 100_000})
        b.close_stdin()
        assert b.wait(5) == 0
        frames = split_frames(bytes(b.stdout_bytes))
        assert len(frames) == 1 + 2 + 2 + 6 + 1  # init ping, noisy, input, fail, nope, 6 chunks, echo
        for payload in frames:
            assert isinstance(decode(payload, "msgpack"), dict)
        err = b.stderr_text()
        for text in ("NOISY-print", "NOISY-sys.stdout.write", "NOISY-sys.__stdout__", "NOISY-fd1 write",
                     "NOISY-warning", "NOISY-stdlib logging", "NOISY-structlog", "NOISY-child process"):
            assert text in err


def test_eof_exits_within_a_second_and_runs_session_hooks():
    with StdioBridge(*ADAPTER, protocol="json") as b:
        assert b.call("t_session_hook", {"session_id": "s-eof"})["result"] == {"session": "s-eof"}
        started = time.monotonic()
        b.close_stdin()
        assert b.wait(5) == 0
        assert time.monotonic() - started < 1.0
        assert "SESSION-HOOK-RAN s-eof" in b.stderr_text()


def test_eof_during_a_long_request_is_noticed_and_the_request_cut_off():
    # The pool is gone while a request runs: the worker must not wait for it.
    with StdioBridge(*ADAPTER, "--grace-period", "0.5", protocol="json") as b:
        rid = b.request("t_sleep", {"seconds": 60, "announce": True})
        assert b.wait_stderr("T_SLEEP-START", 5)
        b.close_stdin()
        reply = b.recv(10)
        assert reply["id"] == rid and "shutting down" in reply["error"]
        assert b.wait(10) == 0


def test_worker_stops_when_its_stdout_reader_goes_away():
    proc = subprocess.Popen([sys.executable, str(ROOT / "grpc_bridge.py"), "--mode", "pool-worker", "--protocol",
                             "json"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(frame(b'{"id": 1, "command": "ping_stream", "args": {"count": 100000000}, "stream": true}'))
        proc.stdin.flush()
        assert len(proc.stdout.read(4)) == 4  # the stream is flowing
        proc.stdout.close()
        assert proc.wait(10) == 0
        assert "stdout is closed; stopping" in proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stderr.close()


def test_sigterm_exits_zero_and_answers_running_request():
    with StdioBridge(*ADAPTER, protocol="json") as b:
        rid = b.request("t_sleep", {"seconds": 30, "announce": True})
        assert b.wait_stderr("T_SLEEP-START", 5)
        b.signal()
        reply = b.recv(10)
        assert reply["id"] == rid and reply["success"] is False and "shutting down" in reply["error"]
        assert b.wait(5) == 0


def test_sigterm_ends_an_open_stream_with_one_final_error_chunk():
    with StdioBridge(protocol="msgpack", timeout=20) as b:
        rid = b.request("ping_stream", {"count": 100_000, "interval": 0.02}, stream=True)
        first = b.recv()
        assert first["id"] == rid and first["is_final"] is False
        b.signal()
        chunks = [first]
        while not chunks[-1]["is_final"]:
            chunks.append(b.recv())
        assert "shutting down" in chunks[-1]["error"]
        assert [c["chunk_index"] for c in chunks] == list(range(len(chunks)))
        assert sum(c["is_final"] for c in chunks) == 1
        assert b.wait(5) == 0


def test_eof_during_a_long_request_exits_within_a_second_with_the_default_grace():
    # The pool is gone: the short grace applies, not --grace-period (1.5 s).
    with StdioBridge(*ADAPTER, protocol="json") as b:
        rid = b.request("t_sleep", {"seconds": 60, "announce": True})
        assert b.wait_stderr("T_SLEEP-START", 5)
        started = time.monotonic()
        b.close_stdin()
        assert b.wait(5) == 0
        assert time.monotonic() - started < 1.0
        reply = b.recv(1)
        assert reply["id"] == rid and "shutting down" in reply["error"]


def test_sigterm_ends_the_worker_while_a_handler_hogs_the_event_loop(tmp_path):
    marker = tmp_path / "hogging"
    with StdioBridge(*OPS, protocol="json") as b:
        b.request("ops_hog_loop", {"marker": str(marker)})
        assert wait_until(marker.exists, 5) is not None
        started = time.monotonic()
        b.signal()
        assert b.wait(5) == 0
        # grace (1.5 s) + SHUTDOWN_MARGIN (0.2 s), under the pool's 2 s before SIGKILL.
        assert time.monotonic() - started < 2.2, b.stderr_text()


# The parent: start the worker with pipes it holds (as a pool does), send it
# a request that hogs the event loop, pass on the worker's pid, wait to be killed.
PARENT = textwrap.dedent("""
    import json, struct, subprocess, sys, time
    worker = subprocess.Popen([sys.executable, sys.argv[1], "--mode", "pool-worker", "--protocol", "json",
                               "--adapter", "tests.handlers_ops"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(sys.argv[2], "wb"))
    request = json.dumps({"id": 1, "command": "ops_hog_loop", "args": {"marker": sys.argv[3]}}).encode()
    worker.stdin.write(struct.pack(">I", len(request)) + request)
    worker.stdin.flush()
    print(worker.pid, flush=True)
    time.sleep(600)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_parent_death_ends_the_worker_while_a_handler_hogs_the_event_loop(tmp_path):
    # EOF is seen on the (blocked) event loop; the parent watcher must do it.
    marker = tmp_path / "hogging"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(SCRIPT), str(tmp_path / "worker.err"), str(marker)],
                              cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    worker = int(parent.stdout.readline())
    try:
        assert wait_until(marker.exists, 10) is not None
        parent.kill()
        parent.wait(5)
        gone = wait_until(lambda: not alive(worker), timeout=3.0)
        log = (tmp_path / "worker.err").read_text()
        assert gone is not None and gone < 2.0, log
        assert "parent died" in log
    finally:
        parent.stdout.close()
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


# -- pipelining and back-pressure -------------------------------------------------------------


def test_pipelined_fast_request_overtakes_slow_one(sb):
    slow = sb.request("t_sleep", {"seconds": 1.0, "tag": "slow"}, pipeline=True)
    fast = sb.request("ping", pipeline=True)
    first, second = sb.recv(), sb.recv()
    assert (first["id"], second["id"]) == (fast, slow)
    assert second["result"]["tag"] == "slow"


def test_without_pipeline_requests_are_served_in_order(sb):
    slow = sb.request("t_sleep", {"seconds": 0.3, "tag": "slow"})
    fast = sb.request("ping")
    assert [sb.recv()["id"], sb.recv()["id"]] == [slow, fast]


def test_in_flight_requests_are_capped():
    with StdioBridge(*ADAPTER, protocol="msgpack") as b:
        ids = [b.request("t_sleep", {"seconds": 0.2}, pipeline=True) for _ in range(MAX_IN_FLIGHT * 2 + 5)]
        answers = [b.recv() for _ in ids]
        assert sorted(a["id"] for a in answers) == ids and all(a["success"] for a in answers)
        peak = b.call("t_peak")["result"]["peak"]
        assert 2 <= peak <= MAX_IN_FLIGHT


def test_concurrent_streams_never_interleave_frames():
    with StdioBridge(*ADAPTER, protocol="json") as b:
        ids = [b.request("t_counted_stream", {"count": 300, "size": 3000}, stream=True, pipeline=True)
               for _ in range(8)]
        seen: dict[int, list[int]] = {rid: [] for rid in ids}
        finals = 0
        while finals < len(ids):
            chunk = b.recv()
            seen[chunk["id"]].append(chunk["chunk_index"])
            finals += chunk["is_final"]
        assert all(indices == list(range(301)) for indices in seen.values())
        b.close_stdin()
        assert b.wait(5) == 0
        assert len(split_frames(bytes(b.stdout_bytes))) == 1 + 8 * 301


def test_slow_stdout_reader_throttles_the_producer():
    with StdioBridge(*ADAPTER, protocol="json") as b:
        b.reading.clear()  # stop reading stdout: the pipe fills up
        b.request("t_counted_stream", {"count": 1_000_000, "size": 1000}, stream=True)
        assert b.wait_stderr("PRODUCED 100\n", 10)
        time.sleep(1.0)  # a producer without back-pressure would make ~10^5 chunks in this time
        produced = max(int(n) for n in re.findall(r"PRODUCED (\d+)", b.stderr_text()))
        assert produced < 20_000
        b.reading.set()
        assert b.recv()["chunk_index"] == 0
        b.kill()


# -- unit tests of the pure parts -------------------------------------------------------------


def test_choose_protocol():
    from snakepit_bridge.transports.stdio import choose_protocol

    assert choose_protocol(["msgpack", "json"], "msgpack") == "msgpack"
    assert choose_protocol(["msgpack", "json"], "json") == "json"
    assert choose_protocol(["cbor", "json", "msgpack"], "cbor") == "json"
    assert choose_protocol(["cbor"], "cbor") is None
    assert choose_protocol(None, None) == "json"  # a malformed offer: JSON, as Snakepit 0.3's bridge did
    assert choose_protocol(["msgpack", "json"], "msgpack", fixed="json") == "json"
    assert choose_protocol(["msgpack"], "msgpack", fixed="json") is None


def test_parse_request():
    from snakepit_bridge.transports.stdio import BadRequest, parse_request

    req = parse_request({"id": 3, "command": "c", "args": None, "stream": True, "timeout_ms": 5, "session_id": "s"})
    assert (req.id, req.command, req.args, req.stream, req.pipeline, req.timeout_ms, req.session_id) == (
        3, "c", {}, True, False, 5, "s")
    for bad, rid in [([], None), ({"command": "c"}, None), ({"id": 1.5, "command": "c"}, None),
                     ({"id": 1, "command": 2}, 1), ({"id": 1, "command": "c", "args": "x"}, 1),
                     ({"id": 1, "command": "c", "pipeline": 1}, 1), ({"id": 1, "command": "c", "timeout_ms": -1}, 1)]:
        with pytest.raises(BadRequest) as info:
            parse_request(bad)
        assert info.value.request_id == rid


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_codec_envelope_splices_encoded_values(name):
    from snakepit_bridge.codecs.frames import CODECS, Encoded

    codec = CODECS[name]()
    result = Encoded(codec.encode_value({"a": [1, 2], "b": "é"}))
    payload = codec.envelope([("id", 5), ("success", True), ("result", result), ("timestamp", "t")])
    assert decode(payload, name) == {"id": 5, "success": True, "result": {"a": [1, 2], "b": "é"}, "timestamp": "t"}
    many = codec.envelope([(f"k{i}", i) for i in range(20)])  # past MessagePack's fixmap
    assert decode(many, name) == {f"k{i}": i for i in range(20)}


def test_recover_id_from_broken_frames():
    from snakepit_bridge.codecs.frames import JsonCodec, MsgpackCodec

    j = JsonCodec()
    assert j.recover_id(b'{"args": {"id": 5, "s": "}{"}, "id": 42, "command": oops') == 42
    assert j.recover_id(b'{"args": {"id": 5}, "command": oops') is None
    assert j.recover_id(b"\xff\xfe") is None
    m = MsgpackCodec()
    broken = msgpack.packb({"args": {"id": 3, "s": "x"}, "id": 77, "command": "echo"})[:-3]
    assert m.recover_id(broken) == 77
    assert m.recover_id(b"\xc1") is None


async def test_run_in_process_over_os_pipes():
    # The transport runs without a process of its own: fds passed in, nothing claimed.
    import os

    from snakepit_bridge.commands import builtin_registry
    from snakepit_bridge.config import Config
    from snakepit_bridge.transports.stdio import run

    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    frames = [json.dumps(NEGOTIATION).encode()]
    frames += [msgpack.packb({"id": i, "command": "echo", "args": {"i": i}}) for i in range(3)]  # as negotiated
    os.write(in_w, b"".join(frame(f) for f in frames))
    os.close(in_w)
    code = await run(Config(mode="pool-worker", log_level="warning"), builtin_registry(), read_fd=in_r, write_fd=out_w)
    assert code == 0
    out = b""
    while chunk := os.read(out_r, 1 << 16):
        out += chunk
    os.close(out_r)
    selected, *replies = split_frames(out)
    assert json.loads(selected)["protocol"] == "msgpack"
    assert [msgpack.unpackb(r)["result"]["echoed"]["i"] for r in replies] == [0, 1, 2]


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_adapter_printing_at_import_time_cannot_corrupt_the_stream(protocol):
    with StdioBridge("--adapter", "tests.printing_adapter", protocol=protocol) as b:
        reply = b.call("shout_stdio", {"text": "ok"})
        assert reply["success"] is True and reply["result"] == {"text": "OK"}
        assert b.stray is None  # everything on stdout parsed as frames
        assert b.wait_stderr("hello from an adapter at import time")
