"""Wire conformance with Snakepit 0.3 (CONTRACT.md §2, §3), run twice: with
grpcio and with grpclib as the client, against the real bridge process."""
from __future__ import annotations

import concurrent.futures
import time

import orjson
import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from tests.bridge_process import Bridge
from tests.wire_clients import CLIENTS

BUILTINS = {"ping", "echo", "compute", "info", "ping_stream", "store", "retrieve",
            "batch_inference", "process_large_dataset", "tail_and_analyze"}


@pytest.fixture(scope="module")
def core_bridge():
    with Bridge("--adapter", "tests.handlers_core") as b:
        yield b


@pytest.fixture(scope="module", params=sorted(CLIENTS))
def wire(request, core_bridge):
    c = CLIENTS[request.param](core_bridge.port)
    yield c
    c.close()


def elixir_args(**values) -> dict[str, bytes]:
    """Args as Snakepit 0.3's Elixir client encodes them: strings raw, the rest JSON."""
    return {k: v.encode() if isinstance(v, str) else orjson.dumps(v) for k, v in values.items()}


def decoded(values) -> dict:
    """Result values as the Elixir client decodes them: JSON, else the raw binary."""
    out = {}
    for k, v in values.items():
        try:
            out[k] = orjson.loads(v)
        except orjson.JSONDecodeError:
            out[k] = bytes(v)
    return out


def execute(wire, command, request_id="r-1", **args):
    return wire.execute(pb.ExecuteRequest(command=command, args=elixir_args(**args), request_id=request_id))


def stream(wire, command, request_id="s-1", **args):
    return wire.stream(pb.ExecuteRequest(command=command, args=elixir_args(**args), request_id=request_id))


def assert_one_final_last(chunks):
    assert chunks, "a stream must carry at least its final chunk"
    assert [c.is_final for c in chunks].count(True) == 1
    assert chunks[-1].is_final
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))


# -- unary ---------------------------------------------------------------------------------

def test_ping_echoes_request_id_and_stamps_nanoseconds(wire):
    before = time.time_ns()
    r = execute(wire, "ping", request_id="req-42")
    assert r.success and r.error == ""
    assert r.request_id == "req-42"
    assert before <= r.timestamp <= time.time_ns()
    assert decoded(r.result)["message"] == "pong"


def test_start_up_objects_are_frozen_and_call_garbage_is_collected(wire):
    """gc.freeze() before the ready line (docs/performance.md, fourth round):
    collections skip what start-up built; a call's cycles are still freed."""
    state = decoded(execute(wire, "gc_state").result)
    assert state["frozen"] > 10_000, state
    assert state["cycle_collected"] is True


def test_result_strings_are_json_quoted(wire):
    r = execute(wire, "ping")
    assert r.result["message"] == b'"pong"'  # so the Elixir client decodes a string


def test_args_decode_per_contract(wire):
    r = execute(wire, "kinds", s="hello", n=123, f=1.5, l=[1, 2], m={"a": 1}, b=True, nil=None)
    kinds = decoded(r.result)
    assert kinds == {"s": "str", "n": "int", "f": "float", "l": "list", "m": "dict", "b": "bool", "nil": "NoneType"}


def test_raw_string_that_looks_like_json_is_decoded_as_json(wire):
    # Documented ambiguity (CONTRACT.md §3): Elixir sends "123" and 123 as the same bytes.
    r = execute(wire, "kinds", digits="123")
    assert decoded(r.result) == {"digits": "int"}


def test_non_utf8_arg_arrives_as_bytes(wire):
    r = wire.execute(pb.ExecuteRequest(command="kinds", args={"blob": b"\xff\xfe\x00"}))
    assert decoded(r.result) == {"blob": "bytes"}


def test_result_value_types_reach_elixir_as_terms(wire):
    r = execute(wire, "types")
    assert r.success
    d = decoded(r.result)
    assert d["str"] == "hello" and d["int"] == 42 and d["float"] == 1.5 and d["bool"] is True
    assert d["none"] is None and d["list"] == [1, "a"] and d["map"] == {"k": "v"}
    assert d["bytes"] == b"\x00\xffraw"  # raw bytes, not JSON: a binary on the Elixir side


def test_echo_returns_args(wire):
    r = execute(wire, "echo", message="hi", n=3)
    assert r.success
    assert decoded(r.result)["echoed"] == {"message": "hi", "n": 3}


@pytest.mark.parametrize("op,a,b,expected", [
    ("add", 2, 3, 5), ("subtract", 2, 3, -1), ("multiply", 2, 3, 6), ("divide", 3, 2, 1.5), ("power", 2, 10, 1024),
])
def test_compute(wire, op, a, b, expected):
    r = execute(wire, "compute", operation=op, a=a, b=b)
    assert r.success, r.error
    assert decoded(r.result)["result"] == expected


@pytest.mark.parametrize("args,needle", [
    ({"operation": "divide", "a": 1, "b": 0}, "division by zero"),
    ({"operation": "modulo", "a": 1, "b": 2}, "'operation': Invalid enum value 'modulo'"),
    ({"operation": "add", "a": 1}, "'b'"),
    ({"operation": "add", "a": "x", "b": 1}, "'a': Expected `int | float`, got `str`"),
])
def test_compute_errors_are_failures(wire, args, needle):
    r = execute(wire, "compute", **args)
    assert not r.success
    assert needle in r.error


def test_unknown_command_is_a_failure_naming_it(wire):
    r = execute(wire, "no_such_command")
    assert not r.success
    assert "no_such_command" in r.error


def test_handler_exception_is_a_failure_with_type_message_and_traceback(wire):
    r = execute(wire, "boom", message="kaput")
    assert not r.success
    assert r.error == "ValueError: kaput"
    assert "Traceback" in decoded(r.result)["traceback"]
    assert execute(wire, "ping").success  # and the process keeps serving


def test_info_command(wire):
    r = execute(wire, "info")
    assert r.success
    info = decoded(r.result)
    assert info["version"] and "ping" in info["supported_commands"]


# -- streaming -----------------------------------------------------------------------------

def test_stream_indexes_final_and_request_id(wire):
    chunks = stream(wire, "ping_stream", request_id="abc", count=4)
    assert_one_final_last(chunks)
    assert len(chunks) == 5  # four pings and the closing final chunk
    assert all(c.request_id == "abc" for c in chunks)
    assert [decoded(c.chunk)["ping_number"] for c in chunks[:-1]] == [1, 2, 3, 4]
    stamps = [c.timestamp for c in chunks]
    assert stamps == sorted(stamps) and stamps[0] > 10**18


def test_sync_generator_stream(wire):
    chunks = stream(wire, "sync_stream", count=3)
    assert_one_final_last(chunks)
    assert [decoded(c.chunk).get("i") for c in chunks] == [0, 1, 2, None]


def test_empty_generator_still_ends_with_one_final_chunk(wire):
    chunks = stream(wire, "empty_stream")
    assert len(chunks) == 1 and chunks[0].is_final and chunks[0].error == ""


def test_stream_that_raises_ends_with_a_final_error_chunk(wire):
    chunks = stream(wire, "fail_midway", before=2)
    assert_one_final_last(chunks)
    assert [c.error for c in chunks[:-1]] == ["", ""]
    assert chunks[-1].error == "RuntimeError: stream broke"


def test_stream_of_unknown_command_is_one_final_error_chunk(wire):
    chunks = stream(wire, "nope")
    assert len(chunks) == 1 and chunks[0].is_final
    assert "nope" in chunks[0].error


def test_stream_of_unary_command_is_one_final_chunk_with_the_result(wire):
    chunks = stream(wire, "compute", operation="add", a=1, b=2)
    assert len(chunks) == 1 and chunks[0].is_final and not chunks[0].error
    assert decoded(chunks[0].chunk)["result"] == 3


def test_execute_on_streaming_command_collects_chunks(wire):
    r = execute(wire, "ping_stream", count=3)
    assert r.success
    result = decoded(r.result)
    assert result["chunk_count"] == 3
    assert [c["ping_number"] for c in result["chunks"]] == [1, 2, 3]


def test_execute_on_failing_stream_is_a_failure(wire):
    r = execute(wire, "fail_midway", before=1)
    assert not r.success and "stream broke" in r.error


# -- sessions ------------------------------------------------------------------------------

def test_execute_in_session_reaches_the_session(wire):
    r = wire.execute_in_session(pb.SessionRequest(session_id="s-1", command="whoami", request_id="x"))
    assert r.success and decoded(r.result)["session_id"] == "s-1"
    assert r.request_id == "x"


def test_session_id_arg_reaches_the_same_session(wire):
    r = execute(wire, "whoami", session_id="s-1")
    assert decoded(r.result)["session_id"] == "s-1"
    assert decoded(execute(wire, "whoami").result)["session_id"] is None


def test_inline_command_sees_its_session_and_deadline(wire):
    # Outside a session an inline command is answered on gRPC's fast path; with one, the full way.
    r = wire.execute_in_session(pb.SessionRequest(session_id="s-9", command="whoami_now", request_id="x"))
    assert decoded(r.result)["session_id"] == "s-9" and r.request_id == "x"
    assert decoded(execute(wire, "whoami_now", session_id="s-9").result)["session_id"] == "s-9"
    plain = decoded(execute(wire, "whoami_now", request_id="r-9").result)
    assert plain["session_id"] is None and plain["request_id"] == "r-9"
    assert plain["remaining"] is None or 0 < plain["remaining"] <= 31  # the client's own deadline (30 s), if any
    timed = wire.execute(pb.ExecuteRequest(command="whoami_now", timeout_ms=2000))
    assert 0 < decoded(timed.result)["remaining"] <= 2


def test_execute_in_session_stream(wire):
    chunks = wire.stream_in_session(pb.SessionRequest(session_id="s-2", command="whoami"))
    assert len(chunks) == 1 and decoded(chunks[0].chunk)["session_id"] == "s-2"


# -- health and info -----------------------------------------------------------------------

def test_health_counts_requests_and_errors(wire):
    before = wire.health(pb.HealthRequest(worker_id="w-7"))
    assert before.healthy and before.worker_id == "w-7" and before.version
    execute(wire, "ping")
    execute(wire, "no_such_command")
    after = wire.health(pb.HealthRequest(worker_id="w-7"))
    assert after.total_requests == before.total_requests + 2
    assert after.total_errors == before.total_errors + 1
    assert after.uptime_ms >= before.uptime_ms


def test_get_info_lists_commands_capabilities_and_stats(wire):
    info = wire.info(pb.InfoRequest(include_capabilities=True, include_stats=True))
    assert BUILTINS <= set(info.supported_commands)
    assert {"boom", "long_stream"} <= set(info.supported_commands)
    assert info.capabilities["streaming"] == "true"
    assert "ping_stream" in info.capabilities["streaming_commands"].split(",")
    assert info.stats.memory_usage_bytes > 10 * 1024 * 1024  # a real RSS, not a placeholder
    assert info.stats.uptime_ms > 0 and info.stats.requests_handled > 0
    assert info.system_info["pid"].isdigit()
    bare = wire.info(pb.InfoRequest())
    assert not bare.capabilities and not bare.HasField("stats")


# -- concurrency ---------------------------------------------------------------------------

def test_health_and_ping_answer_fast_while_eight_streams_and_sync_handlers_run(core_bridge):
    from snakepit_bridge.client import Client

    with Client(core_bridge.target) as c:
        streams = [c.stream("long_stream", {"count": 300, "interval": 0.01}) for _ in range(8)]
        firsts = [next(s) for s in streams]  # all eight are producing
        assert all(f.index == 0 for f in firsts)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            sleepers = [pool.submit(c.execute, "sleep_sync", {"seconds": 1.0}) for _ in range(4)]
            worst = 0.0
            for _ in range(10):
                t = time.perf_counter()
                assert c.health().healthy
                assert c.execute("ping").success
                worst = max(worst, time.perf_counter() - t)
            assert worst < 0.5, f"health+ping took {worst:.3f}s while streams ran"
            assert all(f.result().success for f in sleepers)
        for s in streams:
            s.cancel()
