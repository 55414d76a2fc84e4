"""Loosely typed session ids and integers of any length, over gRPC (args as
Snakepit 0.3's Elixir client sends them) and over stdio frames, against the
real bridge process."""
from __future__ import annotations

import subprocess
import sys

import grpc
import orjson
import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc
from snakepit_bridge.codecs.values import decode_value, loads_json
from tests.bridge_process import Bridge
from tests.stdio_process import ROOT, SCRIPT, StdioBridge, frame, split_frames

# Session ids an Elixir caller holds as strings: they travel raw and parse as JSON.
LOOSE_IDS = ["1.5", "true", "null", "1e3", "42"]


@pytest.fixture(scope="module")
def stub():
    with Bridge() as b, grpc.insecure_channel(b.target) as channel:
        yield pb_grpc.SnakepitBridgeStub(channel)


@pytest.fixture(scope="module")
def stdio():
    with StdioBridge(protocol="json") as w:
        yield w


def execute(stub, command, **args: bytes) -> pb.ExecuteResponse:
    return stub.Execute(pb.ExecuteRequest(command=command, args=args), timeout=10)


# -- session ids -------------------------------------------------------------------------------

@pytest.mark.parametrize("sid", LOOSE_IDS)
def test_grpc_loose_session_id_names_its_own_session(stub, sid):
    key = b'"k-' + sid.encode() + b'"'
    assert execute(stub, "store", key=key, value=b"[1,2]", session_id=sid.encode()).success
    got = execute(stub, "retrieve", key=key, session_id=sid.encode())
    assert got.success and orjson.loads(got.result["value"]) == [1, 2]
    assert orjson.loads(got.result["session_id"]) == sid  # named by the text the caller held
    # The same session through ExecuteInSession (a 0.3 pool uses both).
    r = stub.ExecuteInSession(pb.SessionRequest(session_id=sid, command="retrieve", args={"key": key}), timeout=10)
    assert r.success and orjson.loads(r.result["value"]) == [1, 2]
    # Not the worker-global store, and not a session spelled differently.
    for other in (None, b"2.5", b"false", b"1000", b"1000.0", b"1.50"):
        args = {"key": key} if other is None else {"key": key, "session_id": other}
        if other is not None and other.decode() == sid:
            continue
        r = execute(stub, "retrieve", **args)
        assert not r.success and "not found" in r.error, (sid, other)


def test_grpc_session_id_sent_as_a_json_string_is_that_string(stub):
    assert execute(stub, "store", key=b'"kq"', value=b"7", session_id=b'"quoted"').success
    r = stub.ExecuteInSession(pb.SessionRequest(session_id="quoted", command="retrieve", args={"key": b'"kq"'}),
                              timeout=10)
    assert r.success and r.result["value"] == b"7"


def test_grpc_session_id_that_is_no_text_is_invalid(stub):
    r = stub.Execute(pb.ExecuteRequest(command="retrieve", args={"key": b'"k"', "session_id": b"[1]"},
                                       arg_encodings={"session_id": "json"}), timeout=10)
    assert not r.success and "session_id must be a string" in r.error
    r = execute(stub, "retrieve", key=b'"k"', session_id=b"\xff\xfe")  # not UTF-8: arrives as bytes
    assert not r.success and "session_id" in r.error


def test_grpc_session_id_sent_as_json_names_its_json_text(stub):
    """With an arg encoding the id arrives decoded: 1.50 is the number 1.5, session "1.5"."""
    r = stub.Execute(pb.ExecuteRequest(command="store", args={"key": b'"kj"', "value": b"1", "session_id": b"1.50"},
                                       arg_encodings={"session_id": "json"}), timeout=10)
    assert r.success and orjson.loads(r.result["session_id"]) == "1.5"
    assert execute(stub, "retrieve", key=b'"kj"', session_id=b"1.5").success


@pytest.mark.parametrize("sid, name", [(1.5, "1.5"), (True, "true"), (None, "null"), (42, "42")])
def test_stdio_non_string_session_id_names_the_session_spelled_by_its_json(stdio, sid, name):
    key = f"k-{name}"
    assert stdio.call("store", {"key": key, "value": [1], "session_id": sid})["success"]
    got = stdio.call("retrieve", {"key": key, "session_id": sid})
    assert got["success"] and got["result"]["session_id"] == name
    assert stdio.call("retrieve", {"key": key, "session_id": name})["result"]["value"] == [1]  # same session
    for other in ([], [("session_id", 2.5)], [("session_id", False)]):
        r = stdio.call("retrieve", {"key": key, **dict(other)})
        assert not r["success"] and "not found" in r["error"], (sid, other)
    bad = stdio.call("retrieve", {"key": key, "session_id": [1]})
    assert not bad["success"] and "session_id must be a string" in bad["error"]


# -- integers of any length ----------------------------------------------------------------------

DIGITS = [400, 5000]  # past a double's range; past Python's 4,300-digit str/int limit


@pytest.mark.parametrize("n", DIGITS)
def test_grpc_big_ints_travel_exactly(stub, n):
    text = b"-" + b"7" * n
    r = execute(stub, "echo_payload", v=text, xs=b"[" + text + b",1]")
    assert r.success, r.error
    assert r.result["v"] == text and r.result["xs"] == b"[" + text + b",1]"
    r = stub.Execute(pb.ExecuteRequest(command="echo_payload", args={"v": text}, arg_encodings={"v": "json"}),
                     timeout=10)
    assert r.success and r.result["v"] == text
    big = int(text[:401])
    r = execute(stub, "compute", operation=b"add", a=str(big).encode(), b=b"1")
    assert r.success and r.result["result"] == str(big + 1).encode()


def test_grpc_big_ints_exact_up_to_16_kib_per_value(stub):
    text = b"[" + b",".join([b"9" * 4000] * 4) + b"]"  # 16,005 bytes
    assert len(text) <= 16 * 1024
    r = execute(stub, "echo_payload", v=text)
    assert r.success and r.result["v"] == text


@pytest.mark.parametrize("n", DIGITS)
def test_stdio_json_frames_carry_big_ints_exactly(stdio, n):
    digits = b"3" * n
    rid = stdio.new_id()
    stdio.send_raw(b'{"id":%d,"command":"echo_payload","args":{"v":%s,"w":[-%s]},"timestamp":"t"}'
                   % (rid, digits, digits))
    reply = stdio.recv_raw()
    assert b'"v":' + digits in reply and b'"w":[-' + digits + b"]" in reply
    assert loads_json(reply)["result"]["v"] % 10**12 == 333_333_333_333  # decoded as an int


def test_loads_json_keeps_json_rules():
    assert loads_json(b"1" * 400) == int("1" * 400)
    assert loads_json(b"[1.5, 12345678901234567890]") == [1.5, 12345678901234567890]
    with pytest.raises(ValueError):
        loads_json(b"[NaN, 12345678901234567890]")  # the stdlib would take NaN; JSON does not
    big = b"[" + b"1" * 20_000 + b"]"  # over 16 KiB: orjson, which gives up past ~1e308
    with pytest.raises(ValueError):
        loads_json(big)
    assert decode_value(big) == big.decode()  # without an arg encoding: the text, as a string


def test_stdio_first_frame_with_a_huge_int_is_still_json():
    """No --protocol and no negotiation frame: the worker guesses the protocol from
    the first request, which may hold an int no double can hold (orjson alone fails it)."""
    request = b'{"id":1,"command":"echo_payload","args":{"v":%s},"timestamp":"t"}' % (b"5" * 400)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--mode", "pool-worker", "--quiet"], input=frame(request),
                          capture_output=True, timeout=20, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()
    (reply,) = split_frames(proc.stdout)
    assert b'"v":' + b"5" * 400 in reply and b'"success":true' in reply


@pytest.mark.parametrize("sid, name", [(0, "0"), (False, "false"), (None, "null"), (1.5, "1.5")])
def test_stdio_top_level_session_id_follows_the_same_rule(stdio, sid, name):
    """The opt-in top-level "session_id" field: a value that is not a string
    names the session its JSON text spells, as args["session_id"] does; never
    the worker-global store."""
    key = f"top-{name}"
    assert stdio.call("store", {"key": key, "value": [2]}, session_id=sid)["success"]
    assert stdio.call("retrieve", {"key": key, "session_id": name})["result"]["value"] == [2]
    assert not stdio.call("retrieve", {"key": key})["success"]  # not in the worker-global store
    bad = stdio.call("retrieve", {"key": key}, session_id=[1])
    assert not bad["success"] and "session_id" in bad["error"]
