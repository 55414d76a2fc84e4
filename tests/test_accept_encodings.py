"""Per-call negotiation of binary values (``accept_encodings``) and the
operator's ``--default-accept-encodings``, against the real bridge process.

A call that names no encodings gets JSON at any size (Snakepit 0.3's answer,
see test_wire_03.py); one that names some gets the 10 KB switch restricted to
them, each binary value marked in ``encodings``.
"""
from __future__ import annotations

import grpc
import msgpack
import numpy as np
import orjson
import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc
from snakepit_bridge.client import Client, decode_values
from snakepit_bridge.codecs import ACCEPT_ALL, ACCEPT_NONE, accepted, encode_value
from tests.bridge_process import Bridge

KB = 1024
LIMIT = 100 * 1024 * 1024
# Three values above the 10 KB switch, and bytes.
BIG = {"arr": np.arange(4096, dtype=np.float64), "text": "x" * 20_000, "list": list(range(5000)), "blob": b"\xff" * 20}


@pytest.fixture(scope="module")
def bridges():
    adapter = ("--adapter", "tests.handlers_payload")  # make_payload is test-only
    with Bridge(*adapter) as plain, Bridge(*adapter, "--default-accept-encodings", "npy,utf8") as opted:
        yield plain, opted


def stub_for(bridge):
    options = [("grpc.max_receive_message_length", LIMIT), ("grpc.max_send_message_length", LIMIT)]
    return pb_grpc.SnakepitBridgeStub(grpc.insecure_channel(bridge.target, options))


def echo_request(accept=(), **kind):
    """``echo_payload`` of BIG with explicit arg encodings (so args arrive exact)."""
    raw, enc = {}, {}
    for key, value in BIG.items():
        raw[key], enc[key] = encode_value(value, 0)
    return pb.ExecuteRequest(command="echo_payload", args=raw, arg_encodings=enc, accept_encodings=accept, **kind)


def check_values(raw, encodings):
    got = decode_values(raw, encodings)
    assert np.array_equal(np.asarray(got["arr"]), BIG["arr"])
    assert got["text"] == BIG["text"] and got["list"] == BIG["list"] and got["blob"] == BIG["blob"]


@pytest.mark.parametrize("accept, expected", [
    ((), {"blob": "raw"}),  # 0.3: JSON at any size, bytes raw
    (("npy",), {"arr": "npy", "blob": "raw"}),
    (("utf8", "msgpack"), {"text": "utf8", "list": "msgpack", "blob": "raw"}),
    (("npy", "raw", "utf8", "msgpack"), {"arr": "npy", "text": "utf8", "list": "msgpack", "blob": "raw"}),
    (("json",), {"blob": "raw"}),  # names nothing binary: JSON everything, also where the operator opted in
    (("zstd", "npy"), {"arr": "npy", "blob": "raw"}),  # unknown names are ignored
])
def test_each_call_gets_only_what_it_accepts(bridges, accept, expected):
    plain, _ = bridges
    r = stub_for(plain).Execute(echo_request(accept), timeout=30)
    assert r.success, r.error
    assert dict(r.encodings) == expected
    check_values(r.result, r.encodings)
    for key in set(BIG) - set(expected):
        orjson.loads(r.result[key])  # unmarked values are JSON text


def test_streams_and_sessions_follow_the_call(bridges):
    plain, _ = bridges
    stub = stub_for(plain)
    req = echo_request(("npy",))
    chunks = list(stub.ExecuteStream(req, timeout=30))
    assert dict(chunks[-1].encodings) == {"arr": "npy", "blob": "raw"}
    session = pb.SessionRequest(session_id="acc", command=req.command, args=req.args, arg_encodings=req.arg_encodings,
                                accept_encodings=["utf8"])
    assert dict(stub.ExecuteInSession(session, timeout=30).encodings) == {"text": "utf8", "blob": "raw"}
    chunks = list(stub.ExecuteInSessionStream(session, timeout=30))
    assert dict(chunks[-1].encodings) == {"text": "utf8", "blob": "raw"}
    session.ClearField("accept_encodings")
    assert dict(stub.ExecuteInSession(session, timeout=30).encodings) == {"blob": "raw"}


def test_pull_generators_follow_init_generator(bridges):
    plain, _ = bridges
    stub = stub_for(plain)
    for accept, expected in (((), {}), (("msgpack",), {"value": "msgpack"})):
        gen = stub.InitGenerator(pb.InitGeneratorRequest(
            command="make_payload", args={"kind": b"list", "size": b"100000"}, accept_encodings=accept), timeout=30)
        batch = stub.GetNextBatch(pb.GetNextBatchRequest(generator_id=gen.generator_id), timeout=30)
        assert dict(batch.chunks[-1].encodings) == expected
        assert decode_values(batch.chunks[-1].chunk, batch.chunks[-1].encodings)["value"][:2] == [0.0, 0.5]


def test_execute_on_a_stream_collects_json_unless_asked(bridges):
    """A 0.3 pool calls Execute for streaming commands: the collected body is
    one large structure, JSON for it, MessagePack for a caller that accepts it."""
    plain, _ = bridges
    stub = stub_for(plain)
    args = {"count": b"2000", "interval": b"0"}
    r = stub.Execute(pb.ExecuteRequest(command="ping_stream", args=args), timeout=30)
    assert r.success and dict(r.encodings) == {} and orjson.loads(r.result["chunk_count"]) == 2000
    assert len(orjson.loads(r.result["chunks"])) == 2000
    r = stub.Execute(pb.ExecuteRequest(command="ping_stream", args=args, accept_encodings=["msgpack"]), timeout=30)
    assert dict(r.encodings) == {"chunks": "msgpack"} and len(msgpack.unpackb(r.result["chunks"])) == 2000


def test_operator_default_for_callers_that_do_not_ask(bridges):
    _, opted = bridges
    stub = stub_for(opted)
    r = stub.Execute(echo_request(), timeout=30)
    assert dict(r.encodings) == {"arr": "npy", "text": "utf8", "blob": "raw"}  # msgpack not in the flag
    check_values(r.result, r.encodings)
    r = stub.Execute(echo_request(("json",)), timeout=30)
    assert dict(r.encodings) == {"blob": "raw"}  # a caller can still ask for JSON everything
    caps = stub.GetInfo(pb.InfoRequest(include_capabilities=True), timeout=10).capabilities
    assert caps["accept_encodings"] == "true" and caps["default_accept_encodings"] == "npy,utf8"


def test_python_client_asks_for_everything_elixir_style_for_nothing(bridges):
    plain, _ = bridges
    with Client(plain.target) as c:
        r = c.execute("make_payload", {"kind": "array", "size": 80_000})
        assert r.encodings == {"value": "npy"} and isinstance(r.result["value"], np.ndarray)
        chunks = list(c.stream("make_payload", {"kind": "str", "size": 20_000}))
        assert chunks[-1].encodings == {"value": "utf8"}
    with Client(plain.target, elixir_style=True) as old:
        r = old.execute("make_payload", {"kind": "array", "size": 80_000})
        assert r.encodings == {} and r.result["value"][:2] == [0.0, 0.5]


def test_cli_rejects_unknown_default_encodings():
    from snakepit_bridge.cli import parse_config
    from snakepit_bridge.config import ConfigError

    assert parse_config(["--default-accept-encodings", "all"]).default_accept_encodings == ("npy", "raw", "utf8",
                                                                                            "msgpack")
    assert parse_config([]).default_accept_encodings == ()
    with pytest.raises(ConfigError, match="pickle"):
        parse_config(["--default-accept-encodings", "npy,pickle"])


# -- the codec rule itself -------------------------------------------------------------

def test_accepted_names():
    assert accepted([]) == ACCEPT_NONE and accepted(["json"]) == ACCEPT_NONE
    assert accepted(["npy", "zstd"]) == {"npy"} and accepted(["npy", "raw", "utf8", "msgpack"]) == ACCEPT_ALL


def test_nothing_accepted_means_json_at_any_size():
    for value in ("é" * 100_000, list(range(100_000)), {"k": ["v"] * 50_000}, np.ones((300, 300)),
                  np.float32(1.5), [b"\xff", b"text"]):
        data, enc = encode_value(value, 0, ACCEPT_NONE)
        assert enc == "json", type(value)
    assert encode_value([b"\xff", b"text"], 0, ACCEPT_NONE)[0] == b'[{"__base64__":"/w=="},"text"]'
    assert encode_value(b"\xff" * 20_000, 0, ACCEPT_NONE)[1] == "raw"  # bytes: raw, as 0.3 sent them
    assert encode_value(np.array([1j]), 10**9, ACCEPT_NONE)[1] == "npy"  # JSON has no complex numbers
    assert encode_value([2**70] * 10_000, 0, ACCEPT_ALL)[1] == "json"  # MessagePack cannot carry it
