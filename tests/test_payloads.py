"""Payloads through the real bridge process: every encoding from 1 KB to 50 MB,
the 10 KB switch, ``--binary-threshold 0``, the message-size limits and a
Snakepit 0.3 style client.

This module doubles as a tiny adapter (``--adapter tests.test_payloads``) for
its streaming handler, so the handler sits next to the test that uses it.
"""
from __future__ import annotations

import grpc
import numpy as np
import pytest

from snakepit_bridge import command
from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge.client import Client, decode_values
from snakepit_bridge.codecs import npy
from tests.handlers_payload import make_payload  # noqa: F401 - served by --adapter tests.test_payloads

KB, MB = 1024, 1024 * 1024


@command("t_big_stream")
def t_big_stream(args):
    """``count`` chunks, each holding a float64 array of ``size`` bytes (value i in chunk i)."""
    n = args["size"] // 8
    for i in range(args["count"]):
        yield {"array": np.full(n, float(i)), "index": i}


@command("t_object_array")
def t_object_array():
    return {"a": np.array([{}, 1], dtype=object)}


@pytest.fixture(scope="module")
def pbridge(spawn_bridge_module):
    return spawn_bridge_module("--adapter", "tests.test_payloads")


@pytest.fixture(scope="module")
def spawn_bridge_module():
    from tests.bridge_process import Bridge

    started = []

    def spawn(*args):
        b = Bridge(*args)
        started.append(b)
        return b

    yield spawn
    for b in started:
        b.__exit__(None, None, None)


@pytest.fixture(scope="module")
def pclient(pbridge):
    with Client(pbridge.target) as c:
        c.wait_ready()
        yield c


def value_of(kind: str, size: int):
    """A value of about ``size`` bytes that travels as ``kind`` above the threshold."""
    if kind == "raw":
        return bytes(range(256)) * (size // 256)
    if kind == "utf8":
        return ("snakepit ünïcødé " * (size // 20 + 1))[:size // 2]  # ~2 bytes a character on average
    if kind == "npy":
        return np.arange(size // 8, dtype=np.float64).reshape(-1, 8)
    if size >= MB:  # msgpack: a structure; large ones mostly bytes so that 50 MB stays quick
        return {"blobs": [bytes([i % 256]) * (size // 64) for i in range(64)], "n": size}
    return [i * 0.25 for i in range(size // 9)]


def assert_same(kind: str, got, sent) -> None:
    if kind == "npy":
        assert got.dtype == sent.dtype and got.shape == sent.shape and np.array_equal(got, sent)
    else:
        assert got == sent


SIZES = [1 * KB, 100 * KB, 1 * MB, 10 * MB, 50 * MB]


@pytest.mark.parametrize("kind", ["raw", "utf8", "npy", "msgpack"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // KB}KB")
def test_echo_each_encoding(pclient, kind, size):
    sent = value_of(kind, size)
    r = pclient.execute("echo_payload", {"v": sent}, timeout=60)
    assert r.success, r.error
    expected = "json" if (kind != "raw" and size <= 1 * KB) else kind
    assert r.encodings.get("v", "json") == expected
    if expected == "json" and kind == "npy":
        assert np.array_equal(np.array(r.result["v"]), sent)  # small arrays travel as JSON lists
    else:
        assert_same(kind, r.result["v"], sent)


@pytest.mark.parametrize("size", [1 * KB, 9 * KB], ids=["1KB", "9KB"])
def test_small_structures_echo_as_json(pclient, size):
    sent = {"floats": [0.5] * (size // 4 // 5), "text": "x" * (size // 2)}
    r = pclient.execute("echo_payload", {"v": sent})
    assert r.success and "v" not in r.encodings
    assert r.result["v"] == sent


def test_json_everything_bridge_echoes_50mb_as_json(spawn_bridge_module):
    """A threshold above every size is Snakepit 0.3's JSON-everything; 50 MB of it still fits."""
    b = spawn_bridge_module("--binary-threshold", str(2**31))
    sent = [i + 0.125 for i in range(50 * MB // 12)]  # ~12 JSON bytes per float: ~50 MB
    with Client(b.target, elixir_style=True) as c:
        r = c.execute("echo_payload", {"v": sent}, timeout=60)
    assert r.success and r.encodings == {}
    assert len(r.raw["v"]) > 45 * MB and r.result["v"] == sent


@pytest.mark.parametrize("kind, make", [
    ("utf8", lambda n: "a" * n),
    ("msgpack", lambda n: ["ab"] * (n // 5)),  # '"ab",' is 5 bytes of JSON
    ("npy", lambda n: np.arange(n // 2, dtype=np.int64) % 10),  # 'd,' is 2 bytes of JSON
])
def test_threshold_switch_at_10kb(pclient, kind, make):
    small, big = make(9 * KB), make(11 * KB)
    r = pclient.execute("echo_payload", {"small": small, "big": big})
    assert r.success, r.error
    assert r.encodings == {"big": kind}
    assert len(r.raw["small"]) <= 10_240  # the rule measures the JSON text
    assert_same(kind, r.result["big"], big)


def test_threshold_zero_sends_every_structure_binary(spawn_bridge_module):
    b = spawn_bridge_module("--binary-threshold", "0")
    with Client(b.target) as c:
        r = c.execute("echo_payload", {"map": {"a": 1}, "list": [1, 2], "s": "ok", "arr": np.arange(3),
                                       "n": 5, "f": 1.5, "none": None, "flag": True})
    assert r.success, r.error
    assert r.encodings == {"map": "msgpack", "list": "msgpack", "s": "utf8", "arr": "npy"}
    assert r.result["map"] == {"a": 1} and r.result["list"] == [1, 2] and r.result["s"] == "ok"
    assert np.array_equal(r.result["arr"], np.arange(3))
    assert [r.raw[k] for k in ("n", "f", "none", "flag")] == [b"5", b"1.5", b"null", b"true"]  # scalars stay JSON


def test_streaming_large_chunks(pclient):
    chunks = list(pclient.stream("t_big_stream", {"count": 3, "size": 20 * MB}, timeout=60))
    assert [c.is_final for c in chunks] == [False, False, False, True]
    for i, c in enumerate(chunks[:3]):
        assert c.encodings == {"array": "npy"} and "index" not in c.encodings
        assert c.data["array"].shape == (20 * MB // 8,) and c.data["array"][-1] == float(i)
        assert c.data["index"] == i


# -- Snakepit 0.3 style client ---------------------------------------------------------

def test_snakepit_03_client_still_works(pclient, pbridge):
    """Args as Elixir sends them, results decoded ignoring the encodings map."""
    arr = np.arange(5000, dtype=np.float32)
    with Client(pbridge.target, elixir_style=True) as old:
        r = old.execute("echo_payload", {"n": 7, "s": "hello", "l": [1, "a"], "b": b"\x00\xff" * 10_000})
        assert r.success
        assert r.result == {"n": 7, "s": "hello", "l": [1, "a"], "b": b"\x00\xff" * 10_000}
        # It asks for no binary encoding: a large array reaches it as a JSON list, as from 0.3.
        big = old.execute("make_payload", {"kind": "array", "size": 80_000})
        assert big.encodings == {} and big.result["value"] == (np.arange(10_000) * 0.5).tolist()
        assert big.result["kind"] == "array"
        # The documented ambiguity: a raw string that is valid JSON arrives as JSON.
        assert old.execute("echo_payload", {"s": "123"}).result["s"] == 123
        assert old.execute("echo", {"s": "true"}).result["echoed"]["s"] is True
    # ... which arg_encodings resolves:
    assert pclient.execute("echo_payload", {"s": "123"}).result["s"] == "123"
    r = pclient.execute("echo_payload", {"a": arr})
    assert r.encodings == {"a": "npy"} and np.array_equal(r.result["a"], arr)
    # decode_values with no encodings is exactly what the 0.3 client does
    assert decode_values(r.raw, {})["a"] == r.raw["a"]


def test_echo_keeps_its_03_shape_for_large_values(pclient):
    r = pclient.execute("echo", {"blob": b"x" * 20_000, "n": 1})
    assert r.success and r.encodings == {"echoed": "msgpack"}
    assert r.result["echoed"] == {"blob": b"x" * 20_000, "n": 1}


# -- bad args --------------------------------------------------------------------------

@pytest.mark.parametrize("data, encoding, why", [
    (b"not npy at all", "npy", "cannot be decoded as npy"),
    (b"\xc1\xc1", "msgpack", "cannot be decoded as msgpack"),
    (b"{unclosed", "json", "cannot be decoded as json"),
    (b"\xff\xfe", "utf8", "cannot be decoded as utf8"),
    (b"1", "pickle", "unknown encoding 'pickle'"),
])
def test_undecodable_arg_fails_the_call_and_the_bridge_keeps_serving(pclient, data, encoding, why):
    request = pb.ExecuteRequest(command="echo_payload", args={"good": b"1", "bad": data},
                                arg_encodings={"bad": encoding}, request_id="bad-arg")
    r = pclient.stub.Execute(request, timeout=10)
    assert not r.success
    assert "argument 'bad'" in r.error and why in r.error
    assert pclient.execute("ping").success


def test_object_array_arg_is_refused_not_unpickled(pclient):
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    evil = npy.MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x80\x04N."
    r = pclient.stub.Execute(pb.ExecuteRequest(command="echo_payload", args={"x": evil},
                                               arg_encodings={"x": "npy"}), timeout=10)
    assert not r.success and "argument 'x'" in r.error and "pickle" in r.error


def test_object_array_result_is_a_clear_error(pclient):
    r = pclient.execute("t_object_array")
    assert not r.success and "'a'" in r.error and "pickle" in r.error
    assert pclient.execute("ping").success


# -- message size limits ----------------------------------------------------------------

@pytest.fixture(scope="module")
def small_bridge(spawn_bridge_module):
    return spawn_bridge_module("--max-message-mb", "1", "--adapter", "tests.test_payloads")


def test_too_large_request_is_rejected_naming_the_limit(small_bridge):
    with Client(small_bridge.target) as c:  # the client itself allows 100 MB
        with pytest.raises(grpc.RpcError) as info:
            c.execute("echo_payload", {"v": b"x" * (2 * MB)}, timeout=20)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(MB) in info.value.details()  # "larger than max (2097... vs. 1048576)"
        assert c.execute("ping").success


def test_too_large_result_is_success_false_naming_the_limit_and_flag(small_bridge):
    with Client(small_bridge.target) as c:
        r = c.execute("make_payload", {"kind": "bytes", "size": 2 * MB}, timeout=20)
        assert not r.success
        assert str(MB) in r.error and "--max-message-mb" in r.error and "'value'" in r.error
        ok = c.execute("make_payload", {"kind": "bytes", "size": MB - 4 * KB}, timeout=20)
        assert ok.success and len(ok.result["value"]) == MB - 4 * KB  # just under the limit still goes


def test_too_large_chunk_ends_the_stream_with_an_error_naming_the_limit(small_bridge):
    with Client(small_bridge.target) as c:
        chunks = list(c.stream("t_big_stream", {"count": 3, "size": 2 * MB}, timeout=20))
        assert len(chunks) == 1 and chunks[0].is_final
        assert str(MB) in chunks[0].error and "--max-message-mb" in chunks[0].error
        assert c.health().healthy


def test_client_default_limit_matches_the_bridge(small_bridge):
    with Client(small_bridge.target, max_message_mb=1) as c:
        with pytest.raises(grpc.RpcError) as info:
            c.execute("echo_payload", {"v": b"x" * (2 * MB)}, timeout=20)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    import inspect

    assert inspect.signature(Client).parameters["max_message_mb"].default == 100


def test_100mb_default_limit_both_ways(pclient):
    """90 MB goes in and comes back under the default limit; 101 MB does not go in."""
    blob = b"\x01" * (90 * MB)
    r = pclient.execute("echo_payload", {"v": blob}, timeout=60)
    assert r.success and r.encodings == {"v": "raw"} and r.result["v"] == blob
    del r, blob
    with pytest.raises(grpc.RpcError) as info:
        pclient.execute("echo_payload", {"v": b"\x01" * (101 * MB)}, timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(100 * MB) in info.value.details()


def test_generator_batch_stops_short_of_the_message_limit(small_bridge):
    """Each 600 KB chunk fits a 1 MB message; three in one batch do not, so the
    batch stops short (nothing is lost) and the rest comes in the next batch."""
    with Client(small_bridge.target) as c:
        gen = c.init_generator("t_big_stream", {"count": 3, "size": 600 * KB})
        assert not gen.error
        chunks, more, error = c.next_batch(gen.generator_id, batch_size=3)
        assert not error and more and len(chunks) == 1
        assert chunks[0].data["array"].nbytes == 600 * KB
        c.close_generator(gen.generator_id)
        gen = c.init_generator("t_big_stream", {"count": 2, "size": 600 * KB})
        chunks, _, error = c.next_batch(gen.generator_id, batch_size=1)
        assert not error and chunks[0].data["array"].nbytes == 600 * KB


def test_session_requests_take_arg_encodings(pclient):
    r = pclient.execute_in_session("payload-session", "echo_payload", {"s": "123", "a": np.arange(3.0)})
    assert r.success and r.result["s"] == "123" and r.result["a"] == [0.0, 1.0, 2.0]
    chunks = list(pclient.stream("echo_payload", {"s": "true"}, session_id="payload-session"))
    assert chunks[-1].is_final and chunks[-1].data["s"] == "true"
