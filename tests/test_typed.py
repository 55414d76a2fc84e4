"""Typed commands against the real process: decoding toward declared types over
gRPC (as Snakepit's Elixir client sends), stdio and pull generators; every
problem listed by field; Describe; untyped handlers unchanged."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import asdict, dataclass

import grpc
import msgspec
import numpy as np
import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc
from snakepit_bridge.client import Client, ClientError, decode_values
from snakepit_bridge.codecs import npy
from snakepit_bridge.dispatch import Dispatcher, Request
from snakepit_bridge.registry import Registry
from tests.bridge_process import ROOT
from tests.stdio_process import StdioBridge

ADAPTER = ("--adapter", "tests.handlers_typed")
BRIDGE_ARGS = ADAPTER  # for the shared bridge/client fixtures (conftest.py)


def raw_execute(bridge, command: str, args: dict[str, bytes], encodings: dict[str, str] | None = None):
    """An Execute exactly as given: raw bytes per arg, as Snakepit's Elixir client builds them."""
    with grpc.insecure_channel(bridge.target) as ch:
        return pb_grpc.SnakepitBridgeStub(ch).Execute(
            pb.ExecuteRequest(command=command, args=args, arg_encodings=encodings or {}), timeout=30)


def result(r) -> dict:
    assert r.success, r.error
    return decode_values(dict(r.result), dict(r.encodings))


# -- decoding toward the declared type (gRPC, Elixir-style bytes) ----------------------------


def test_str_parameters_keep_elixir_strings_that_look_like_json(bridge, client):
    # Elixir sends a string raw and everything else as JSON: "123" and "true" are strings here.
    r = raw_execute(bridge, "t_everything", {"text": b"123", "count": b"7", "note": b"true", "mode": b"slow",
                                             "flag": b"true", "ratio": b"2", "tags": b'["1", "x"]'})
    out = result(r)
    assert out["text"] == {"value": "123", "type": "str"}
    assert out["note"] == {"value": "true", "type": "str"}
    assert out["mode"]["value"] == "slow"
    assert out["count"] == {"value": 7, "type": "int"}
    assert out["flag"] == {"value": True, "type": "bool"}
    assert out["ratio"] == {"value": 2.0, "type": "float"}
    assert out["tags"]["value"] == ["1", "x"]
    # The untyped handler keeps the 0.3 reading: the same bytes are the number.
    untyped = result(raw_execute(bridge, "t_untyped", {"text": b"123", "note": b"true"}))
    assert untyped["types"] == {"text": "int", "note": "bool"}


def test_optional_str_reads_null_as_none_and_explicit_encodings_still_win(bridge):
    out = result(raw_execute(bridge, "t_everything", {"text": b"a", "count": b"1", "note": b"null"}))
    assert out["note"] == {"value": None, "type": "NoneType"}
    out = result(raw_execute(bridge, "t_everything", {"text": b'"quoted"', "count": b"1"}, {"text": "json"}))
    assert out["text"]["value"] == "quoted"


def test_bytes_nested_records_maps_and_arrays(bridge, client):
    blob = bytes(range(256))
    matrix = np.arange(6, dtype=np.float64).reshape(2, 3)
    r = raw_execute(bridge, "t_everything", {
        "text": b"t", "count": b"3", "blob": blob, "origin": b'{"x": 1, "y": 2.5, "label": "o"}',
        "weights": b'{"a": 1, "b": 0.5}', "matrix": npy.dumps(matrix),
    })
    out = result(r)
    assert out["origin"]["value"] == {"point": [1.0, 2.5, "o"]}
    assert out["weights"]["value"] == {"a": 1.0, "b": 0.5}
    assert out["matrix"]["value"] == {"array": matrix.tolist(), "dtype": "float64", "shape": [2, 3]}
    assert out["blob"]["type"] == "bytes"
    # Through our client (npy labelled, ints cast to the declared float64), and arrays as nested lists.
    r = client.execute("t_everything", {"text": "t", "count": 1, "matrix": np.arange(3, dtype=np.int32)})
    assert r.success and r.result["matrix"]["value"]["dtype"] == "float64"
    r = client.execute("t_everything", {"text": "t", "count": 1, "matrix": [[1, 2], [3, 4]]})
    assert r.success and r.result["matrix"]["value"]["shape"] == [2, 2]


def test_every_problem_is_listed_by_field(client):
    r = client.execute("t_everything", {"count": -1, "ratio": "fast", "mode": "medium", "origin": {"x": "1"},
                                        "bogus": 1, "matrix": [1.5, 2.5]})
    assert not r.success
    problems = r.result["errors"]
    assert set(problems) == {"text", "count", "ratio", "mode", "origin", "bogus"}
    assert problems["text"] == "missing (required)"
    assert problems["count"] == "Expected `int` >= 0, got -1"
    assert problems["ratio"] == "Expected `float`, got `str`"
    assert problems["mode"].startswith("Invalid enum value 'medium'; expected one of 'fast', 'slow'")
    assert problems["origin"] == "Expected `float`, got `str` (at origin.x)"
    assert problems["bogus"] == "unknown argument"
    assert r.error.startswith("invalid arguments for 't_everything': 'text': missing (required); 'count': ")
    assert "Traceback" not in r.error and "traceback" not in r.result
    assert client.execute("ping").success  # the worker keeps serving


def test_bad_arguments_end_a_stream_with_one_final_error_chunk(client):
    chunks = list(client.stream("t_typed_stream", {"n": 1000, "word": 5}))
    assert len(chunks) == 1 and chunks[0].is_final
    assert chunks[0].error == ("invalid arguments for 't_typed_stream': 'n': Expected `int` <= 100, got 1000; "
                               "'word': Expected `str`, got `int`")
    good = list(client.stream("t_typed_stream", {"n": 2}))
    assert [c.data for c in good] == [{"i": 0, "word": "tick"}, {"i": 1, "word": "tick"}, {}]


def test_init_generator_reports_bad_arguments_and_serves_good_ones(client):
    r = client.init_generator("t_typed_stream", {"n": "x"})
    assert r.generator_id == "" and r.error == "invalid arguments for 't_typed_stream': 'n': Expected `int`, got `str`"
    gid = client.init_generator("t_typed_stream", {"n": 3, "word": "w"}).generator_id
    chunks, more, err = client.next_batch(gid, 10)
    assert err == "" and not more and [c.data.get("i") for c in chunks] == [0, 1, 2, None]


def test_keyword_parameters_and_reserved_keys(client):
    r = client.execute("t_keywords", {"a": 2, "other": [1]})
    assert r.success and r.result == {"a": 2, "b": "x", "extra": {"other": [1]}, "has_ctx": True}
    # A 0.3 GRPCWorker puts session_id in args of any command: tolerated, not an unknown argument.
    r = client.execute("t_typed_stream", {"n": 1, "session_id": "s-typed"})
    assert r.success and r.result["chunk_count"] == 1
    r = client.execute("store", {"key": "k", "value": "v", "session_id": "s-typed"})
    assert r.success and r.result["session_id"] == "s-typed"
    assert client.execute("retrieve", {"key": "k", "session_id": "s-typed"}).result["value"] == "v"


def test_typed_declarations_do_not_import_msgspec_until_a_typed_call(spawn_bridge):
    b = spawn_bridge(*ADAPTER)
    with Client(b.target) as c:
        c.wait_ready()
        assert c.execute("ping").success and c.execute("echo", {"x": 1}).success
        assert c.execute("t_loaded").result == {"msgspec": False}
        assert c.execute("compute", {"operation": "add", "a": 1, "b": 2}).result["result"] == 3
        assert c.execute("t_loaded").result == {"msgspec": True}


# -- stdio ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_stdio_decodes_checks_and_describes(protocol):
    with StdioBridge(*ADAPTER, protocol=protocol) as sb:
        reply = sb.call("t_everything", {"text": "123", "count": 2, "blob": b"\x00\xff" if protocol == "msgpack"
                                         else "plain", "origin": {"x": 1, "y": 2}, "session_id": "s1"})
        assert reply["success"], reply
        out = reply["result"]
        assert out["text"]["value"] == "123" and out["count"]["value"] == 2
        assert out["blob"]["type"] == "bytes" and out["origin"]["value"] == {"point": [1.0, 2.0, ""]}
        bad = sb.call("t_everything", {"text": 5, "count": True})
        assert bad["success"] is False
        assert bad["error"] == ("invalid arguments for 't_everything': 'text': Expected `str`, got `int`; "
                                "'count': Expected `int`, got `bool`")
        chunks = sb.stream("t_typed_stream", {"n": -1})
        assert len(chunks) == 1 and chunks[0]["is_final"] and "'n': Expected `int` >= 0" in chunks[0]["error"]
        inline = sb.call("compute", {"operation": "nope", "a": 1, "b": 2})  # an inline command, answered at once
        assert inline["success"] is False and "'operation': Invalid enum value 'nope'" in inline["error"]
        described = sb.call("describe", {"command": "t_typed_stream"})
        assert described["success"] and described["result"]["commands"] == [{
            "name": "t_typed_stream", "streaming": True, "doc": "", "typed": True,
            "params_schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 100},
                               "word": {"type": "string", "default": "tick"}},
                "required": ["n"], "additionalProperties": False}}]
        missing = sb.call("describe", {"command": "nope"})
        assert missing["success"] is False and missing["error"] == "unknown command 'nope'"
        assert sb.call("ping", {"worker_id": "w", "initialization": True})["success"]


# -- Describe ---------------------------------------------------------------------------------


def test_describe_rpc_covers_every_command(client):
    every = [asdict(d) for d in client.describe()]
    names = [d["name"] for d in every]
    assert set(client.info().supported_commands) == set(names)
    by_name = {d["name"]: d for d in every}
    assert by_name["t_everything"]["doc"] == "Echo every declared parameter with its Python type."
    assert by_name["t_untyped"] == {"name": "t_untyped", "streaming": False, "typed": False, "params_schema": {},
                                    "doc": "An untyped handler: the dict as decoded, as before."}
    props = by_name["t_everything"]["params_schema"]["properties"]
    assert props["count"] == {"description": "how many", "type": "integer", "minimum": 0, "maximum": 1000}
    assert props["mode"] == {"enum": ["fast", "slow"], "default": "fast"}
    assert by_name["t_everything"]["params_schema"]["required"] == ["text", "count"]
    assert "Point" in by_name["t_everything"]["params_schema"]["$defs"]
    assert by_name["t_keywords"]["params_schema"]["required"] == ["a"]
    # The built-ins declare theirs, with defaults and bounds.
    stream = by_name["ping_stream"]
    assert stream["streaming"] and stream["typed"]
    assert stream["params_schema"]["properties"]["count"]["default"] == 5
    assert stream["params_schema"]["properties"]["count"]["minimum"] == 0
    for name in ("compute", "store", "retrieve", "delete", "session_info", "end_session", "list_sessions",
                 "ping_stream", "batch_inference", "process_large_dataset", "tail_and_analyze"):
        assert by_name[name]["typed"], name
    assert not by_name["echo"]["typed"] and not by_name["ping"]["typed"]


def test_describe_rpc_one_command_and_unknown_names(bridge, client):
    (one,) = client.describe(["compute"])
    assert one.params_schema["required"] == ["operation", "a", "b"]
    with pytest.raises(ClientError, match="unknown command\\(s\\): 'nope'"):
        client.describe(["compute", "nope"])
    with grpc.insecure_channel(bridge.target) as ch:
        r = pb_grpc.SnakepitBridgeStub(ch).Describe(pb.DescribeRequest(commands=["ping", "nope"]), timeout=30)
    assert r.error == "unknown command(s): 'nope'" and [c.name for c in r.commands] == ["ping"]
    assert r.commands[0].params_schema == "{}" and not r.commands[0].typed


def test_get_info_is_what_a_03_client_saw(client):
    caps = client.info().capabilities
    assert set(caps) == {"streaming", "streaming_commands", "sessions", "generators", "binary_encodings",
                         "binary_threshold", "max_message_bytes", "arg_encodings", "accept_encodings",
                         "default_accept_encodings"}


def test_client_cli_describe(bridge):
    port = bridge.target.rsplit(":", 1)[1]
    run = subprocess.run([sys.executable, "-m", "snakepit_bridge.client", "--port", port, "describe", "ping_stream"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    assert shown["name"] == "ping_stream" and shown["params_schema"]["properties"]["interval"]["default"] == 0
    run = subprocess.run([sys.executable, "-m", "snakepit_bridge.client", "--port", port, "describe", "nope"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "nope" in run.stderr


# -- declarations (in-process) ----------------------------------------------------------------


@dataclass
class _Rec:
    a: int


def test_declarations_are_read_once_and_untyped_stays_untyped():
    reg = Registry()

    @reg.command("plain")
    def plain(args: dict, ctx):
        return {"got": args}

    @reg.command("rec")
    def rec(args: _Rec):
        return {"a": args.a}

    assert reg.get("plain").params is None and reg.get("rec").params is not None
    with pytest.raises(TypeError, match="keyword-only parameters takes nothing else positionally"):
        reg.add("bad", lambda args, *, x: None)

    async def run():
        d = Dispatcher(reg)
        try:
            return [await d.call(Request("plain", {"a": "1"})), await d.call(Request("rec", {"a": 1})),
                    await d.call(Request("rec", {"a": "1"}))]
        finally:
            await d.aclose()

    plain_r, rec_r, bad_r = asyncio.run(run())
    assert plain_r.result == {"got": {"a": "1"}} and rec_r.result == {"a": 1}
    assert bad_r.code == "INVALID_ARGUMENT" and bad_r.result == {"errors": {"a": "Expected `int`, got `str`"}}


class _StructArgs(msgspec.Struct):
    name: str
    size: int = 1


def test_a_msgspec_struct_declares_too():
    reg = Registry()

    @reg.command("s")
    def s(args: _StructArgs):
        return {"name": args.name, "size": args.size, "struct": isinstance(args, _StructArgs)}

    async def run():
        d = Dispatcher(reg)
        try:
            return await d.call(Request("s", {"name": "n"})), await d.call(Request("s", {"size": 2}))
        finally:
            await d.aclose()

    good, bad = asyncio.run(run())
    assert good.result == {"name": "n", "size": 1, "struct": True}
    assert bad.result == {"errors": {"name": "missing (required)"}}


@dataclass
class _Unresolvable:
    a: NoSuchType  # noqa: F821 - on purpose: fails when first used, not at registration


@dataclass
class _Ints:
    xs: np.typing.NDArray[np.int64]
    blob: bytes = b""


def _calls(reg: Registry, *requests: Request):
    async def run():
        d = Dispatcher(reg)
        try:
            return [await d.call(r) for r in requests]
        finally:
            await d.aclose()

    return asyncio.run(run())


def test_unresolvable_annotations_fail_the_call_not_the_registration():
    reg = Registry()
    reg.add("u", lambda args: args)
    reg.get("u").func.__annotations__["args"] = _Unresolvable
    reg.add("u", reg.get("u").func)
    (r,) = _calls(reg, Request("u", {"a": 1}))
    assert not r.success and "annotations of _Unresolvable do not resolve" in r.error
    described = reg.get("u").describe()  # and describing it says so, without failing
    assert described["typed"] and "do not resolve" in described["params_schema"]["$comment"]


def test_array_dtype_casts_same_kind_only_and_bytes_take_text_and_base64():
    reg = Registry()

    @reg.command("ints")
    def ints(args: _Ints):
        return {"dtype": str(args.xs.dtype), "blob": args.blob}

    ok, text, b64, bad = _calls(reg, Request("ints", {"xs": np.array([1, 2], dtype=np.int32)}),
                                Request("ints", {"xs": [1], "blob": "hé"}),
                                Request("ints", {"xs": [1], "blob": {"__base64__": "AP8="}}),
                                Request("ints", {"xs": np.array([1.5])}))
    assert ok.result["dtype"] == "int64"
    assert text.result["blob"] == "hé".encode() and b64.result["blob"] == b"\x00\xff"
    assert not bad.success and bad.code == "INVALID_ARGUMENT" and "'xs'" in bad.error


def test_ctx_may_be_keyword_only_or_absent_and_reserved_keys_are_dropped():
    reg = Registry()

    @reg.command("kw_ctx")
    def kw_ctx(*, n: int, ctx):
        return {"n": n, "ctx": ctx.command}

    @reg.command("no_ctx")
    def no_ctx(*, n: int):
        return {"n": n}

    a, b, c = _calls(reg, Request("kw_ctx", {"n": 1}),
                     Request("no_ctx", {"n": 2, "worker_id": "w", "initialization": True, "session_id": "s"}),
                     Request("no_ctx", {"n": 2, "other": 1}))
    assert a.result == {"n": 1, "ctx": "kw_ctx"} and b.result == {"n": 2}
    assert c.result == {"errors": {"other": "unknown argument"}}


@dataclass
class _Range:
    lo: int
    hi: int

    def __post_init__(self):
        if self.lo > self.hi:
            raise ValueError(f"lo ({self.lo}) must not exceed hi ({self.hi})")


def test_a_records_own_check_is_an_invalid_argument():
    reg = Registry()

    @reg.command("range")
    def range_(args: _Range):
        return {"span": args.hi - args.lo}

    good, bad = _calls(reg, Request("range", {"lo": 1, "hi": 3}), Request("range", {"lo": 3, "hi": 1}))
    assert good.result == {"span": 2}
    assert (bad.code, bad.error) == ("INVALID_ARGUMENT", "invalid arguments for 'range': lo (3) must not exceed hi (1)")
