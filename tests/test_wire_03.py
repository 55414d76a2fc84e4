"""What a stock Snakepit 0.3 pool receives: every value as the term it expects.

The client here decodes exactly as Snakepit 0.3's Elixir client does: each
result or chunk value is JSON if it parses, else the raw binary, and the
``encodings`` map is never read. It sends args as that client does (strings
raw, the rest JSON) and never sets ``accept_encodings``. Against the real
bridge process (default flags), every built-in command's results, with values
from 1 KB to 10 MB, must decode to the term the caller expects, over Execute,
ExecuteStream, the session RPCs and pull generators (docs/protocol.md,
"Values the bridge sends").
"""
from __future__ import annotations

import json
import uuid

import grpc
import numpy as np
import orjson
import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc
from tests.bridge_process import Bridge
from tests.handlers_payload import make_payload

KB, MB = 1024, 1024 * 1024
LIMIT = 100 * MB
FORMS = ("execute", "stream", "session", "session_stream", "generator")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def bridge(data_dir):
    # make_payload is test-only; tail_and_analyze reads files under --data-dir only.
    with Bridge("--adapter", "tests.handlers_payload", "--data-dir", str(data_dir)) as b:
        yield b


@pytest.fixture(scope="module")
def stub(bridge):
    options = [("grpc.max_receive_message_length", LIMIT), ("grpc.max_send_message_length", LIMIT)]
    with grpc.insecure_channel(bridge.target, options) as channel:
        yield pb_grpc.SnakepitBridgeStub(channel)


def elixir_args(args: dict) -> dict[str, bytes]:
    """As Snakepit 0.3's Elixir client encodes args: a string raw, anything else as
    JSON (Jason writes ints of any size; orjson stops at 64 bits, the stdlib does not)."""
    return {k: v.encode() if isinstance(v, str) else _json(v) for k, v in args.items()}


def _json(value) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def as_elixir(values) -> dict:
    """As Snakepit 0.3's Elixir client decodes a result or chunk map: JSON, else the binary."""
    out = {}
    for key, data in values.items():
        try:
            # Jason keeps ints of any size exact: so does the stdlib (orjson makes them floats);
            # orjson for big values, which hold no such ints here.
            out[key] = json.loads(data) if len(data) < 64 * KB else orjson.loads(data)
        except ValueError:
            out[key] = bytes(data)
    return out


def term(value):
    """The term a JSON decoder makes of ``value`` (arrays become lists, tuples lists, ...)."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


class Call:
    """One answer, as the Elixir caller sees it: ``maps`` (one per response or
    chunk), ``errors``, and whether any value arrived as a binary."""

    def __init__(self, maps: list[dict], errors: list[str]) -> None:
        self.maps = maps
        self.errors = errors

    @property
    def last(self) -> dict:
        return self.maps[-1]


def call(stub, form: str, command: str, args: dict, session: str = "") -> Call:
    """``command`` over one of the five ways a 0.3 pool (or a puller) calls it;
    ``session``: the session id (ExecuteInSession forms), else none."""
    raw = elixir_args(args)
    rid = uuid.uuid4().hex
    if form in ("session", "session_stream"):
        req = pb.SessionRequest(session_id=session or "s-" + rid, command=command, args=raw, request_id=rid)
    else:
        req = pb.ExecuteRequest(command=command, args=raw, request_id=rid)
    if form == "execute":
        r = stub.Execute(req, timeout=60)
        return Call([as_elixir(r.result)], [r.error] if not r.success else [])
    if form == "session":
        r = stub.ExecuteInSession(req, timeout=60)
        return Call([as_elixir(r.result)], [r.error] if not r.success else [])
    if form in ("stream", "session_stream"):
        rpc = stub.ExecuteStream if form == "stream" else stub.ExecuteInSessionStream
        chunks = list(rpc(req, timeout=60))
        assert [c.is_final for c in chunks].count(True) == 1 and chunks[-1].is_final
        return Call([as_elixir(c.chunk) for c in chunks], [c.error for c in chunks if c.error])
    gen = stub.InitGenerator(pb.InitGeneratorRequest(command=command, args=raw, session_id=session,
                                                     request_id=rid), timeout=60)
    assert not gen.error, gen.error
    maps, errors, more = [], [], True
    while more:
        batch = stub.GetNextBatch(pb.GetNextBatchRequest(generator_id=gen.generator_id, batch_size=50), timeout=60)
        assert not batch.error, batch.error
        maps += [as_elixir(c.chunk) for c in batch.chunks]
        errors += [c.error for c in batch.chunks if c.error]
        more = batch.has_more
    return Call(maps, errors)


def unary_result(c: Call) -> dict:
    """A unary command's answer: the one map (streamed forms: the final chunk's)."""
    assert not c.errors, c.errors
    return c.last


def binaries(value, path="") -> list[str]:
    """Where a decoded term holds a binary: the caller got bytes it did not expect."""
    if isinstance(value, bytes):
        return [path or "<value>"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in binaries(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in binaries(v, f"{path}[{i}]")]
    return []


# -- values from 1 KB to 10 MB ------------------------------------------------------------

SIZES = (1 * KB, 64 * KB, 10 * MB)
KINDS = ("list", "dict", "str", "array")


# A 10 MB map is 650,000 entries: seconds of Python dict work on either side, so
# it goes one way only (Execute); the other kinds at 10 MB go every way.
CASES = [(kind, size, form) for kind in KINDS for size in SIZES for form in FORMS
         if not (kind == "dict" and size == 10 * MB and form != "execute")]


def _cases():
    for kind, size, form in CASES:
        marks = [pytest.mark.slow] if size >= MB else []
        yield pytest.param(kind, size, form, marks=marks, id=f"{kind}-{size // KB}KB-{form}")


@pytest.mark.parametrize("kind, size, form", list(_cases()))
def test_generated_values_decode_to_their_terms(stub, kind, size, form):
    got = unary_result(call(stub, form, "make_payload", {"kind": kind, "size": size}))
    assert got == term(make_payload(kind=kind, size=size))


# Values as an Elixir caller sends them (a list, a map, a string), echoed back.
def sent_value(kind: str, size: int):
    if kind == "list":
        return [i * 0.25 for i in range(size // 8)]
    if kind == "dict":
        return {f"key{i}": [i, "v"] for i in range(size // 16)}
    return "Elixir ünïcødé " * (size // 16)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("size", (1 * KB, 64 * KB), ids=lambda s: f"{s // KB}KB")
@pytest.mark.parametrize("kind", ("list", "dict", "str"))
def test_echoes_return_what_was_sent(stub, kind, size, form):
    value = sent_value(kind, size)
    assert unary_result(call(stub, form, "echo", {"data": value}))["echoed"] == {"data": value}
    assert unary_result(call(stub, form, "echo_payload", {"data": value})) == {"data": value}


@pytest.mark.slow
@pytest.mark.parametrize("form", ("execute", "generator"))
def test_10mb_echo(stub, form):
    value = sent_value("list", 10 * MB)
    assert unary_result(call(stub, form, "echo", {"data": value}))["echoed"] == {"data": value}


@pytest.mark.parametrize("form", ("session", "session_stream", "execute", "generator"))
@pytest.mark.parametrize("size", (64 * KB, pytest.param(10 * MB, marks=pytest.mark.slow)), ids=lambda s: f"{s // KB}KB")
def test_session_store_retrieve(stub, form, size):
    """Stored through ExecuteInSession, read back every way a session can be reached."""
    session = "sess-" + uuid.uuid4().hex
    value = sent_value("dict", size) if size < MB else sent_value("str", size)  # see CASES
    stored = call(stub, "session", "store", {"key": "k", "value": value}, session)
    assert unary_result(stored)["stored"] is True
    if form in ("session", "session_stream"):
        got = call(stub, form, "retrieve", {"key": "k"}, session)
    else:  # the way a 0.3 GRPCWorker calls in a session: args["session_id"]
        got = call(stub, form, "retrieve", {"key": "k", "session_id": session})
    assert unary_result(got) == {"key": "k", "value": value, "session_id": session}


# -- every built-in command -------------------------------------------------------------------

LOG_LINES = ["INFO start", "ERROR disk full", "INFO ok", "ERROR again"]
BATCH = [f"item {i}: this is wonderful" if i % 2 else f"item {i}: awful" for i in range(400)]


def builtin_args(tmp_log: str) -> dict[str, dict]:
    return {
        "ping": {},
        "echo": {"x": [1, 2]},
        "compute": {"operation": "add", "a": 2**70, "b": 1},
        "info": {},
        "store": {"key": "k", "value": list(range(5000))},
        "retrieve": {"key": "k"},
        "delete": {"key": "k"},
        "session_info": {},
        "end_session": {},
        "list_sessions": {},
        "describe": {"command": "ping_stream"},
        "echo_payload": {"v": sent_value("dict", 64 * KB)},
        "make_payload": {"kind": "list", "size": 64 * KB},
        "ping_stream": {"count": 3, "interval": 0},
        "batch_inference": {"batch_items": BATCH},
        "process_large_dataset": {"total_rows": 5000, "chunk_size": 1000},
        "tail_and_analyze": {"log_path": tmp_log, "patterns": ["ERROR"], "from_beginning": True, "max_matches": 2},
    }


def test_every_builtin_answers_json_terms_every_way(stub, data_dir):
    """No value of any built-in command reaches a 0.3 caller as an opaque binary,
    whichever way it is called (Execute collects a stream: 400 inference chunks
    are one large ``chunks`` list, JSON too)."""
    log = data_dir / "app.log"
    log.write_text("".join(line + "\n" for line in LOG_LINES))
    args = builtin_args(str(log))
    info = stub.GetInfo(pb.InfoRequest(), timeout=10)
    assert set(info.supported_commands) <= set(args), "a built-in command without a case here"
    for command in info.supported_commands:
        for form in FORMS:
            session = "every-" + uuid.uuid4().hex
            if command in ("retrieve", "delete"):
                call(stub, "session", "store", {"key": "k", "value": list(range(5000))}, session)
            a = dict(args[command])
            if form in ("execute", "stream", "generator") and command in (
                    "store", "retrieve", "delete", "session_info", "end_session"):
                a["session_id"] = session
            c = call(stub, form, command, a, session)
            assert not c.errors, (command, form, c.errors)
            assert not binaries(c.maps), (command, form, binaries(c.maps))
    # And the values are the expected ones, e.g. the collected inference stream:
    r = unary_result(call(stub, "execute", "batch_inference", {"batch_items": BATCH}))
    assert [c["item"] for c in r["chunks"][:len(BATCH)]] == BATCH  # then a summary chunk
    assert unary_result(call(stub, "execute", "compute", args["compute"]))["result"] == 2**70 + 1


# -- what 0.3 got as binaries stays binary ------------------------------------------------------

def test_bytes_stay_raw_and_big_arrays_are_lists(stub):
    blob = b"\x00\xff" * (64 * KB)
    r = stub.Execute(pb.ExecuteRequest(command="make_payload", args=elixir_args({"kind": "bytes", "size": 2 * MB})),
                     timeout=60)
    assert r.success and r.encodings == {"value": "raw"}  # bytes: raw, as from 0.3 (the map is extra)
    assert as_elixir(r.result)["value"] == make_payload(kind="bytes", size=2 * MB)["value"]
    r = stub.Execute(pb.ExecuteRequest(command="echo_payload", args={"b": blob}), timeout=60)
    assert as_elixir(r.result)["b"] == blob  # not UTF-8, not JSON: the binary as sent
    r = stub.Execute(pb.ExecuteRequest(command="make_payload", args=elixir_args({"kind": "array", "size": 8 * MB})),
                     timeout=60)
    assert r.encodings == {} and as_elixir(r.result)["value"] == (np.arange(MB) * 0.5).tolist()
