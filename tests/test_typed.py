"""Typed commands against the real process: decoding toward declared types over
gRPC (as Snakepit's Elixir client sends), stdio and pull generators; every
problem listed by field; Describe; untyped handlers unchanged."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Annotated

import grpc
import msgspec
import numpy as np
import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc
from snakepit_bridge.client import Client, ClientError, decode_values
from snakepit_bridge.codecs import npy
from snakepit_bridge.dispatch import Dispatcher, Request
from snakepit_bridge.params import Param
from snakepit_bridge.registry import Registry
from tests.bridge_process import ROOT
from tests.stdio_process import StdioBridge

ADAPTER = ("--adapter", "tests.handlers_typed")
BRIDGE_ARGS = ADAPTER  # for the shared bridge/client fixtures (conftest.py)
BRIDGE_DATA_DIR = True  # tail_and_analyze reads the tests' files (--data-dir)


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


# -- audit fixes: untyped options, nested records, extra policy, str unions, defaults ---------


def test_untyped_handlers_with_keyword_only_options_load_and_get_the_dict(client):
    # The adapter loaded at all: before the fix these raised TypeError at registration.
    r = client.execute("t_untyped_options", {"x": 1})
    assert r.success and r.result == {"args": {"x": 1}, "verbose": False, "has_ctx": True}
    r = client.execute("t_untyped_cache", {"y": "2"})
    assert r.success and r.result["args"] == {"y": "2"} and r.result["calls"] >= 1
    (described,) = client.describe(["t_untyped_options"])
    assert not described.typed and described.params_schema == {}


def test_nested_records_keep_their_bounds_and_refuse_unknown_fields(bridge, client):
    good = client.execute("t_nested", {"inner": {"n": 3, "tag": "t"}, "more": [{"n": 10}]})
    assert good.success and good.result == {"inner": ["Inner", 3, "t"], "more": [["Inner", 10]]}
    bad = client.execute("t_nested", {"inner": {"n": 99}, "more": [{"n": 1, "bogus": 1}]})
    assert not bad.success and bad.result["errors"] == {
        "inner": "Expected `int` <= 10 (at inner.n)",
        "more": "Object contains unknown field `bogus` (at more[0])"}
    # Elixir-style: the nested map as JSON bytes.
    r = raw_execute(bridge, "t_nested", {"inner": b'{"n": -1}'})
    assert not r.success and "Expected `int` >= 0" in r.error
    (described,) = client.describe(["t_nested"])
    inner = described.params_schema["$defs"]["Inner"]
    assert inner["properties"]["n"] == {"description": "a small count", "type": "integer",
                                        "minimum": 0, "maximum": 10}
    assert inner["additionalProperties"] is False


def test_builtins_ignore_unknown_keys_as_snakepit_03_did(bridge, client):
    r = client.execute("compute", {"operation": "add", "a": 1, "b": 2, "precision": 3})
    assert r.success and r.result["result"] == 3
    r = raw_execute(bridge, "store", {"key": b"k2", "value": b"v", "ttl": b"60", "session_id": b"s-extra"})
    assert r.success, r.error
    chunks = list(client.stream("process_large_dataset", {"total_rows": 3, "chunk_size": 2, "verbose": True}))
    assert chunks[-1].is_final and not chunks[-1].error
    described = {d.name: d.params_schema for d in client.describe(["compute", "t_everything"])}
    assert "additionalProperties" not in described["compute"]
    assert described["t_everything"]["additionalProperties"] is False  # a user command's default: forbid
    # Ill-typed values are still refused, naming them.
    r = client.execute("compute", {"operation": "add", "a": "x", "b": 2, "precision": 3})
    assert not r.success and set(r.result["errors"]) == {"a"}
    # The bounds protocol.md lists as new; a declared str keeps Elixir's "123".
    (chunk,) = client.stream("ping_stream", {"count": 1, "interval": 86401})
    assert chunk.is_final and "'interval': Expected `int` <= 86400, got 86401" in chunk.error
    r = raw_execute(bridge, "store", {"key": b"123", "value": b"1", "session_id": b"s-extra"})
    assert r.success and result(r)["key"] == "123"


def test_batch_inference_probabilities_takes_0_and_1_as_03_did(bridge):
    def first_chunk(flag: bytes):
        with grpc.insecure_channel(bridge.target) as ch:
            stream = pb_grpc.SnakepitBridgeStub(ch).ExecuteStream(pb.ExecuteRequest(
                command="batch_inference", args={"batch_items": b'["great"]', "probabilities": flag}), timeout=30)
            return next(iter(stream))

    off, on, bad = first_chunk(b"0"), first_chunk(b"1"), first_chunk(b"2")
    assert "probabilities" not in decode_values(dict(off.chunk), dict(off.encodings))
    assert "probabilities" in decode_values(dict(on.chunk), dict(on.encodings))
    assert bad.is_final and "'probabilities'" in bad.error


def test_a_str_union_keeps_elixir_text_that_looks_like_a_number(bridge, tmp_path):
    log = tmp_path / "access.log"
    log.write_text("GET /a 200\nGET /b 404\n")
    with grpc.insecure_channel(bridge.target) as ch:
        stream = pb_grpc.SnakepitBridgeStub(ch).ExecuteStream(pb.ExecuteRequest(
            command="tail_and_analyze", args={"log_path": str(log).encode(), "patterns": b"404",
                                              "from_beginning": b"true", "max_matches": b"1"}), timeout=30)
        chunks = [decode_values(dict(c.chunk), dict(c.encodings)) | {"error": c.error} for c in stream]
    matches = [c for c in chunks if c.get("event") == "match"]
    assert [(m["line_number"], m["pattern_matched"]) for m in matches] == [(2, "404")]
    assert chunks[-1]["error"] == ""
    # A JSON list is still a list; a regex that is not JSON ("[ab]") is text.
    with grpc.insecure_channel(bridge.target) as ch:
        stream = pb_grpc.SnakepitBridgeStub(ch).ExecuteStream(pb.ExecuteRequest(
            command="tail_and_analyze", args={"log_path": str(log).encode(), "patterns": b'["20[0]", "[4]04"]',
                                              "from_beginning": b"true", "max_matches": b"2"}), timeout=30)
        found = [decode_values(dict(c.chunk), dict(c.encodings)).get("pattern_matched") for c in stream]
    assert [p for p in found if p] == ["20[0]", "[4]04"]


def test_the_str_union_rule(bridge):
    def call(encodings=None, **args):
        return result(raw_execute(bridge, "t_mixed", args, encodings))

    assert call(v=b"404", w=b"[4]04") == {"v": "404", "v_type": "str", "w": "[4]04"}  # "[4]04" is not JSON
    assert call(v=b"null", w=b' ["a", "b"]') == {"v": None, "v_type": "NoneType", "w": ["a", "b"]}
    assert call(v=b"true", w=b"{x") == {"v": "true", "v_type": "str", "w": "{x"}
    assert call({"v": "json"}, v=b"404")["v_type"] == "int"  # an explicit encoding still wins
    r = raw_execute(bridge, "t_mixed", {"w": b'{"a": 1}'})  # a JSON map, which no member takes
    assert not r.success and "'w'" in r.error


def test_bad_base64_bytes_and_non_numeric_arrays_are_invalid_arguments(client):
    with StdioBridge(*ADAPTER, "--log-level", "debug", protocol="json") as sb:
        # (and a built-in's ignored keys are logged at debug)
        assert sb.call("compute", {"operation": "add", "a": 1, "b": 2, "precision": 3})["success"]
        assert sb.wait_stderr("unknown arguments ignored")
        assert "command=compute" in sb.stderr_text() and "keys=['precision']" in sb.stderr_text()
        bad = sb.call("t_everything", {"text": "t", "count": 1, "blob": {"__base64__": "!!!"}})
        assert bad["success"] is False and "'blob': invalid base64" in bad["error"]
        good = sb.call("t_everything", {"text": "t", "count": 1, "blob": {"__base64__": "AP8="}})
        assert good["success"] and good["result"]["blob"]["type"] == "bytes"
    for value in (["a", "b"], [True, False]):
        r = client.execute("t_array", {"a": value})
        assert not r.success and "numeric array" in r.result["errors"]["a"], value
        r = client.execute("t_everything", {"text": "t", "count": 1, "matrix": value})
        assert not r.success and "numeric array" in r.error, value
    r = client.execute("t_array", {"a": [1, 2], "mask": [True, False]})
    assert r.success and r.result == {"dtype": "int64", "mask": "bool"}


def test_an_error_lists_at_most_20_problems(client):
    r = client.execute("t_everything", {"text": "t", "count": 1, **{f"k{i:05}": 1 for i in range(5000)}})
    assert not r.success and len(r.error) < 1000
    assert len(r.result["errors"]) == 20 and r.result["more_errors"] == 4980
    assert r.error.endswith("; and 4980 more")
    assert client.execute("ping").success


def test_declaration_forms_refused_at_registration():
    reg = Registry()
    with pytest.raises(TypeError, match=r"\*args cannot declare keyword-only parameters \(got 'n'\)"):
        reg.add("star", lambda *args, n: None)
    with pytest.raises(ValueError, match="extra must be one of 'forbid', 'ignore'"):
        reg.add("policy", lambda *, n: None, extra="allow")
    reg.add("star_ok", lambda *args, verbose=False: args)  # an un-annotated option: untyped, as before
    reg.add("rec_opt", lambda args, *, verbose=False: args)
    assert reg.get("star_ok").params is None and reg.get("rec_opt").params is None
    assert reg.get("rec_opt").arity == 1

    def record_with_option(args: _Rec, *, verbose=False):
        return {"a": args.a, "verbose": verbose}

    reg.add("rec_typed_opt", record_with_option)
    assert reg.get("rec_typed_opt").params is not None
    (r,) = _calls(reg, Request("rec_typed_opt", {"a": 1}))
    assert r.result == {"a": 1, "verbose": False}


@dataclass
class _BadInner:
    n: Annotated[int, Param(ge=10)] = 0


@dataclass
class _HoldsBad:
    inner: _BadInner


def test_a_default_that_breaks_its_own_bound_fails_the_first_call_naming_it():
    reg = Registry()

    @reg.command("bad_default")
    def bad_default(*, n: Annotated[int, Param(ge=10)] = 0):
        return {"n": n}

    @reg.command("bad_nested_default")
    def bad_nested_default(args: _HoldsBad):
        return {}

    @reg.command("none_default")
    def none_default(*, x: int = None):  # type: ignore[assignment]
        return {}

    a, b, c = _calls(reg, Request("bad_default", {"n": 11}), Request("bad_nested_default", {"inner": {"n": 11}}),
                     Request("none_default", {"x": 1}))
    assert not c.success and "the default of 'x' (None) does not satisfy" in c.error
    assert not a.success and ("command 'bad_default': the default of 'n' (0) does not satisfy its own "
                              "declaration: Expected `int` >= 10, got 0") in a.error
    assert not b.success and "the default of '_BadInner.n' (0)" in b.error
    assert "does not satisfy" in reg.get("bad_default").describe()["params_schema"]["$comment"]


class _SInner(msgspec.Struct):
    n: Annotated[int, Param(ge=0, le=10)]


class _SOuter(msgspec.Struct):
    inner: _SInner
    items: list[_SInner] = []


@dataclass
class _Lenient:
    inner: _SInner
    extra_items: list[int] = field(default_factory=list)


def test_nested_structs_and_the_ignore_policy_in_process():
    reg = Registry()

    @reg.command("s")
    def s(args: _SOuter):
        return {"inner": type(args.inner).__name__, "items": [type(i).__name__ for i in args.items]}

    @reg.command("lenient", extra="ignore")
    def lenient(args: _Lenient):
        return {"n": args.inner.n}

    ok, bound, unknown, ign = _calls(reg, Request("s", {"inner": {"n": 1}, "items": [{"n": 2}]}),
                                     Request("s", {"inner": {"n": 11}}),
                                     Request("s", {"inner": {"n": 1, "x": 0}}),
                                     Request("lenient", {"inner": {"n": 1, "x": 0}, "y": 1}))
    assert ok.result == {"inner": "_SInner", "items": ["_SInner"]}
    assert bound.result == {"errors": {"inner": "Expected `int` <= 10 (at inner.n)"}}
    assert unknown.result == {"errors": {"inner": "Object contains unknown field `x`"}}
    assert ign.success and ign.result == {"n": 1}


@dataclass
class _Node:
    v: Annotated[int, Param(ge=0)]
    kids: list[_Node] = field(default_factory=list)


def test_a_record_holding_itself_is_checked_and_described():
    reg = Registry()

    @reg.command("tree")
    def tree(args: _Node):
        return {"kids": [type(k).__name__ for k in args.kids]}

    ok, bad = _calls(reg, Request("tree", {"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}]}]}),
                     Request("tree", {"v": 1, "kids": [{"v": -2}]}))
    assert ok.result == {"kids": ["_Node"]}
    assert bad.result == {"errors": {"kids": "Expected `int` >= 0 (at kids[0].v)"}}
    schema = reg.get("tree").describe()["params_schema"]
    assert schema["properties"]["v"] == {"type": "integer", "minimum": 0} and "$defs" in schema
