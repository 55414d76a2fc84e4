"""In-process unit tests of the dispatch core: no socket, no process."""
from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

import pytest

from snakepit_bridge.config import Config
from snakepit_bridge.dispatch import Dispatcher, Request
from snakepit_bridge.errors import BridgeError, InvalidArgument
from snakepit_bridge.registry import Kind, Registry

reg = Registry()
produced: dict[str, int] = {}
finalized: set[str] = set()


@reg.command("f")
def f(args):
    return {"kind": "function", **args}


@reg.command("co")
async def co(args):
    await asyncio.sleep(0)
    return 42  # not a dict: sent as {"value": 42}


@reg.command("gen")
def gen(args, ctx):
    tag = args.get("tag", "")
    produced[tag] = 0
    try:
        for i in range(args.get("n", 3)):
            produced[tag] += 1
            yield {"i": i}
    finally:
        finalized.add(tag)


@reg.command("agen")
async def agen(args, ctx):
    tag = args.get("tag", "")
    produced[tag] = 0
    try:
        for i in range(args.get("n", 3)):
            produced[tag] += 1
            yield i  # sent as {"value": i}
    finally:
        finalized.add(tag)


@reg.command("mixed")
def mixed(args, ctx):
    yield {"a": 1}
    yield ctx.error("bad item", item=2)
    if args.get("raise"):
        raise args["raise"]
    yield ctx.final(summary=True)


@reg.command("empty")
async def empty():
    return
    yield


@reg.command("invalid")
def invalid(args):
    raise InvalidArgument("x must be positive", details={"field": "x"})


@reg.command("slow")
def slow(args, ctx):
    ctx.wait(10)
    return {"cancelled": ctx.cancelled}


@reg.command("aslow")
async def aslow(args):
    await asyncio.sleep(10)


@reg.command("sleepy")
async def sleepy(args):
    yield {"i": 0}
    await asyncio.sleep(10)
    yield {"i": 1}


def test_kinds_are_decided_at_registration():
    assert [reg.get(n).kind for n in ("f", "co", "gen", "agen")] == [
        Kind.FUNCTION, Kind.COROUTINE, Kind.GENERATOR, Kind.ASYNC_GENERATOR]


@pytest.fixture
async def d():
    dispatcher = Dispatcher(reg, Config(stream_buffer=4, max_execute_chunks=5))
    yield dispatcher
    await dispatcher.aclose()


async def chunks_of(d: Dispatcher, command: str, args: dict[str, Any] | None = None, **kw):
    return [c async for c in d.stream(Request(command, args or {}, **kw))]


async def test_unary_kinds_call_and_stream(d):
    r = await d.call(Request("f", {"x": 1}))
    assert r.success and r.result == {"kind": "function", "x": 1} and r.code == "OK"
    r = await d.call(Request("co", {}))
    assert r.success and r.result == {"value": 42}
    chunks = await chunks_of(d, "co")
    assert [(c.data, c.is_final, c.index) for c in chunks] == [({"value": 42}, True, 0)]


@pytest.mark.parametrize("command", ["gen", "agen"])
async def test_generators_end_with_exactly_one_empty_final(d, command):
    chunks = await chunks_of(d, command, {"n": 3})
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert [c.is_final for c in chunks] == [False, False, False, True]
    assert chunks[-1].data == {} and chunks[-1].error == ""
    assert chunks[1].data in ({"i": 1}, {"value": 1})


async def test_empty_generator_is_one_final_chunk(d):
    chunks = await chunks_of(d, "empty")
    assert len(chunks) == 1 and chunks[0].is_final and chunks[0].index == 0


async def test_per_item_error_then_final_marker(d):
    chunks = await chunks_of(d, "mixed")
    assert [(c.data, c.error, c.is_final) for c in chunks] == [
        ({"a": 1}, "", False), ({"item": 2}, "bad item", False), ({"summary": True}, "", True)]


async def test_exception_ends_the_stream_with_a_final_error_chunk(d):
    chunks = await chunks_of(d, "mixed", {"raise": KeyError("k")})
    assert [c.is_final for c in chunks] == [False, False, True]
    assert chunks[-1].error == "KeyError: 'k'" and "traceback" in chunks[-1].data
    assert chunks[-1].code == "UNKNOWN"


async def test_expected_errors_keep_code_and_message(d):
    r = await d.call(Request("invalid", {}))
    assert (r.success, r.code, r.error, r.result) == (False, "INVALID_ARGUMENT", "x must be positive", {"field": "x"})
    r = await d.call(Request("missing", {}))
    assert (r.code, r.error) == ("UNIMPLEMENTED", "unknown command 'missing'")
    chunks = await chunks_of(d, "missing")
    assert len(chunks) == 1 and chunks[0].is_final and chunks[0].code == "UNIMPLEMENTED"


async def test_decode_and_encode_go_through_dispatch(d):
    def bad_decode() -> dict[str, Any]:
        raise InvalidArgument("cannot decode 'x'")

    r = await d.call(Request("f", {}, decode=bad_decode))
    assert (r.success, r.code, r.error) == (False, "INVALID_ARGUMENT", "cannot decode 'x'")
    r = await d.call(Request("f", {}, decode=lambda: {"y": 2}, encode=lambda m: ("enc", m)))
    assert r.result["y"] == 2 and r.payload == ("enc", r.result)
    chunks = await chunks_of(d, "gen", {"n": 2}, encode=lambda m: sorted(m))
    assert [c.payload for c in chunks] == [["i"], ["i"], []]


@pytest.mark.parametrize("command", ["slow", "aslow"])
async def test_unary_deadline(d, command):
    started = time.monotonic()
    r = await d.call(Request(command, {}, timeout_ms=100))
    assert time.monotonic() - started < 2
    assert (r.success, r.code) == (False, "DEADLINE_EXCEEDED") and "deadline exceeded" in r.error


async def test_transport_deadline_and_timeout_ms_take_the_earlier(d):
    r = await d.call(Request("aslow", {}, timeout_ms=10_000, deadline=time.monotonic() + 0.05))
    assert r.code == "DEADLINE_EXCEEDED"


async def test_stream_deadline_gives_a_final_deadline_chunk(d):
    started = time.monotonic()
    chunks = await chunks_of(d, "sleepy", timeout_ms=100)
    assert time.monotonic() - started < 2
    assert [c.is_final for c in chunks] == [False, True]
    assert chunks[-1].code == "DEADLINE_EXCEEDED" and "deadline exceeded" in chunks[-1].error
    assert d.stats.active_streams == 0


async def test_execute_collects_a_stream(d):
    r = await d.call(Request("gen", {"n": 3}))
    assert r.success and r.result == {"chunks": [{"i": 0}, {"i": 1}, {"i": 2}], "chunk_count": 3}
    r = await d.call(Request("mixed", {}))  # a per-item error fails the call, keeping every chunk
    assert not r.success and r.error == "bad item"
    assert r.result["chunks"] == [{"a": 1}, {"item": 2}, {"summary": True}]
    r = await d.call(Request("sleepy", {}, timeout_ms=100))
    assert r.code == "DEADLINE_EXCEEDED"


async def test_execute_chunk_cap(d):
    r = await d.call(Request("gen", {"n": 5, "tag": "cap-ok"}))
    assert r.success and r.result["chunk_count"] == 5
    r = await d.call(Request("agen", {"n": 1_000_000, "tag": "cap"}))
    assert (r.success, r.code) == (False, "RESOURCE_EXHAUSTED") and "ExecuteStream" in r.error
    assert "cap" in finalized and produced["cap"] < 100  # stopped, not run to the end


@pytest.mark.parametrize("command", ["gen", "agen"])
async def test_producer_runs_at_most_the_buffer_ahead(d, command):
    tag = f"lead-{command}"
    stream = d.stream(Request(command, {"n": 1_000_000, "tag": tag}))
    first = await anext(stream)
    assert first.index == 0
    for _ in range(50):  # let the producer run as far as it can
        await asyncio.sleep(0.001)
    # one chunk taken, at most stream_buffer (4) waiting, one being produced
    assert produced[tag] <= 1 + 4 + 1
    await stream.aclose()
    assert tag in finalized and d.stats.active_streams == 0


@pytest.mark.parametrize("command", ["gen", "agen"])
async def test_closing_the_stream_closes_the_generator(d, command):
    tag = f"close-{command}"
    async with contextlib.aclosing(d.stream(Request(command, {"n": 1_000_000, "tag": tag}))) as stream:
        async for chunk in stream:
            if chunk.index == 2:
                break
    assert tag in finalized
    assert d.stats.active_streams == 0


async def test_cancelling_the_consumer_closes_the_generator(d):
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in d.stream(Request("sleepy", {})):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    assert d.stats.active_streams == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert d.stats.active_streams == 0


async def test_interrupt_streams_ends_them_with_shutting_down(d):
    stream = d.stream(Request("sleepy", {}))
    assert (await anext(stream)).data == {"i": 0}
    assert d.interrupt_streams() == 1
    last = await anext(stream)
    assert last.is_final and last.error == "worker is shutting down" and last.code == "UNAVAILABLE"
    r = await d.call(Request("f", {}))
    assert r.code == "UNAVAILABLE"


async def test_sync_handlers_run_off_the_event_loop():
    loop_thread = threading.get_ident()
    seen: list[int] = []
    r2 = Registry()

    @r2.command("where_gen")
    def where_gen():
        seen.append(threading.get_ident())
        yield {}

    @r2.command("where_fn")
    def where_fn():
        seen.append(threading.get_ident())

    d2 = Dispatcher(r2)
    try:
        await chunks_of(d2, "where_gen")
        assert (await d2.call(Request("where_fn", {}))).success
    finally:
        await d2.aclose()
    assert len(seen) == 2 and loop_thread not in seen


async def test_progress_and_every():
    from snakepit_bridge.context import Context

    ctx = Context(request_id="r", command="c", deadline=None, session=None, log=None)
    p = ctx.progress(1, 4, "step", rows=10)
    assert p["progress"] == 1 and p["total"] == 4 and p["progress_percent"] == 25.0
    assert p["message"] == "step" and p["rows"] == 10 and p["elapsed_s"] >= 0 and p["eta_s"] >= 0
    assert ctx.progress(0, 0)["progress_percent"] == 100.0  # nothing to do is done
    assert ctx.progress(7, 5)["progress_percent"] == 100.0  # clamped
    assert "progress_percent" not in ctx.progress(3) and "eta_s" not in ctx.progress(0, 10)
    assert ctx.progress(1, 2, progress_percent=1)["progress_percent"] == 1  # fields win
    assert ctx.every(60) is True and ctx.every(60) is False
    assert ctx.every(0) is True


class RecordingLog:
    """Stands in for the dispatcher's structlog logger."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def bind(self, **kw):
        return self

    def __getattr__(self, level):
        return lambda event, **kw: self.lines.append((level, event, kw))


async def test_abandoned_sync_handler_is_logged():
    r2 = Registry()

    @r2.command("stubborn")
    def stubborn():
        time.sleep(0.6)  # ignores ctx

    d2 = Dispatcher(r2)
    d2.log = log = RecordingLog()
    try:
        r = await d2.call(Request("stubborn", {}, timeout_ms=50))
        assert r.code == "DEADLINE_EXCEEDED"
        await asyncio.sleep(0.4)  # past CLOSE_WAIT, the handler still sleeping
        assert any(level == "warning" and "left to finish" in event for level, event, _ in log.lines), log.lines
    finally:
        await d2.aclose()


async def test_deadline_covers_waiting_for_the_session_lock(d):
    holder = asyncio.create_task(d.call(Request("aslow", {}, session_id="s1")))
    for _ in range(100):
        await asyncio.sleep(0.005)
        if d.sessions.peek("s1") is not None and d.sessions.peek("s1").lock.locked():
            break
    started = time.monotonic()
    r = await d.call(Request("f", {}, session_id="s1", timeout_ms=100))
    assert r.code == "DEADLINE_EXCEEDED" and time.monotonic() - started < 2
    assert (await d.call(Request("f", {}, session_id="other", timeout_ms=100))).success
    holder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder


# -- SystemExit / KeyboardInterrupt from handlers -------------------------------------------------

exits = Registry()


@exits.command("exit_sync")
def exit_sync(args):
    raise args.get("exc", SystemExit(3))


@exits.command("exit_async")
async def exit_async(args):
    await asyncio.sleep(0)
    raise args.get("exc", SystemExit(4))


@exits.command("exit_gen")
def exit_gen(args):
    yield {"i": 0}
    raise args.get("exc", SystemExit(5))


@exits.command("exit_agen")
async def exit_agen(args):
    yield {"i": 0}
    raise args.get("exc", SystemExit(6))


@exits.command("exit_late")
async def exit_late(args):
    try:
        await asyncio.sleep(10)
    finally:
        raise SystemExit(7)  # while being cancelled past its deadline: must not reach the loop


@pytest.fixture
async def dx():
    dispatcher = Dispatcher(exits, Config(stream_buffer=4))
    dispatcher.log = RecordingLog()
    yield dispatcher
    await dispatcher.aclose()


@pytest.mark.parametrize("command, message", [("exit_sync", "SystemExit: 3"), ("exit_async", "SystemExit: 4")])
async def test_unary_system_exit_fails_the_call_not_the_worker(dx, command, message):
    r = await dx.call(Request(command, {}))
    assert not r.success and r.error == message and r.code == "UNKNOWN"
    assert "SystemExit" in r.result["traceback"]
    chunks = await chunks_of(dx, command)
    assert [(c.error, c.is_final, c.index) for c in chunks] == [(message, True, 0)]
    assert any(event == "handler raised" for _, event, _ in dx.log.lines)  # logged with its traceback
    calls = [kw for _, event, kw in dx.log.lines if event == "call"]
    assert calls and all(kw["outcome"] == "error" for kw in calls)
    assert dx.stats.errors == 2


@pytest.mark.parametrize("command, message", [("exit_gen", "SystemExit: 5"), ("exit_agen", "SystemExit: 6")])
async def test_generator_system_exit_ends_the_stream_with_an_error_chunk(dx, command, message):
    chunks = await chunks_of(dx, command)
    assert [(c.data.get("i"), c.error, c.is_final, c.index) for c in chunks] == [
        (0, "", False, 0), (None, message, True, 1)]
    r = await dx.call(Request(command, {}))
    assert not r.success and r.error == message and r.result["chunks"][0] == {"i": 0}


@pytest.mark.parametrize("command", ["exit_sync", "exit_async", "exit_gen", "exit_agen"])
async def test_keyboard_interrupt_from_a_handler_fails_the_call(dx, command):
    chunks = await chunks_of(dx, command, {"exc": KeyboardInterrupt()})
    assert chunks[-1].is_final and chunks[-1].error == "KeyboardInterrupt: "
    r = await dx.call(Request(command, {"exc": KeyboardInterrupt()}))
    assert not r.success and r.error == "KeyboardInterrupt: "


async def test_system_exit_in_abandoned_coroutine_is_contained(dx):
    r = await dx.call(Request("exit_late", {}, timeout_ms=30))
    assert r.code == "DEADLINE_EXCEEDED"
    await asyncio.sleep(0.05)  # the task has finished with SystemExit by now; the loop still runs
    assert not dx._abandoned
    assert (await dx.call(Request("exit_sync", {}))).error == "SystemExit: 3"


# -- error details that do not encode ---------------------------------------------------------------


@exits.command("bad_details")
def bad_details(args):
    raise BridgeError("nope", code="FAILED_PRECONDITION", details={"obj": object()})


@exits.command("bad_details_stream")
def bad_details_stream(args):
    yield {"i": 0}
    raise BridgeError("nope", code="FAILED_PRECONDITION", details={"obj": object()})


def _json_encode(data):
    return json.dumps(data)  # TypeError for an object(): like the wire codecs


async def test_unencodable_error_details_fall_back_to_empty(dx):
    r = await dx.call(Request("bad_details", {}, encode=_json_encode))
    assert (r.success, r.error, r.code, r.result, r.payload) == (False, "nope", "FAILED_PRECONDITION", {}, "{}")
    chunks = [c async for c in dx.stream(Request("bad_details", {}, encode=_json_encode))]
    assert [(c.error, c.code, c.is_final, c.payload) for c in chunks] == [("nope", "FAILED_PRECONDITION", True, "{}")]
    chunks = [c async for c in dx.stream(Request("bad_details_stream", {}, encode=_json_encode))]
    assert [(c.index, c.error, c.is_final, c.payload) for c in chunks] == [
        (0, "", False, '{"i": 0}'), (1, "nope", True, "{}")]
    assert any(event.startswith("error details could not be encoded") for _, event, _ in dx.log.lines)
    r = await dx.call(Request("bad_details_stream", {}, encode=_json_encode))  # Execute on a stream: collected
    assert (r.success, r.error, r.code) == (False, "nope", "FAILED_PRECONDITION")
    assert r.result == {"chunks": [{"i": 0}, {}], "chunk_count": 2} and json.loads(r.payload) == r.result


async def test_open_sync_streams_cannot_starve_sync_calls_and_one_too_many_is_refused():
    d2 = Dispatcher(reg, Config(max_workers=2, stream_buffer=1))
    try:
        held = [d2.stream(Request("gen", {"n": 1_000_000, "tag": f"held-{i}"})) for i in range(2)]
        for stream in held:  # each producer now waits on its full buffer, holding its thread
            assert (await anext(stream)).index == 0
        r = await asyncio.wait_for(d2.call(Request("f", {"x": 1})), 5)
        assert r.success and r.result["x"] == 1
        refused = [c async for c in d2.stream(Request("gen", {"n": 3, "tag": "refused"}))]
        assert len(refused) == 1 and refused[0].is_final and refused[0].code == "RESOURCE_EXHAUSTED"
        assert "--max-workers" in refused[0].error
        await held[0].aclose()
        for _ in range(200):  # the closed generator's thread is given back
            if d2._threads_held < 2:
                break
            await asyncio.sleep(0.005)
        chunks = [c async for c in d2.stream(Request("gen", {"n": 3, "tag": "after"}))]
        assert [c.index for c in chunks] == [0, 1, 2, 3] and not chunks[-1].error
        await held[1].aclose()
    finally:
        await d2.aclose()


async def test_large_arguments_are_decoded_off_the_event_loop(d):
    from snakepit_bridge.dispatch import OFFLOAD_BYTES

    where: list[int] = []

    def decode() -> dict[str, Any]:
        where.append(threading.get_ident())
        return {"x": 1}

    small = await d.call(Request("f", {}, decode=decode, decode_size=100))
    big = await d.call(Request("f", {}, decode=decode, decode_size=OFFLOAD_BYTES + 1))
    assert small.success and big.success and big.result["x"] == 1
    assert where[0] == threading.get_ident() and where[1] != threading.get_ident()


async def test_large_coroutine_results_are_encoded_off_the_event_loop():
    r2 = Registry()

    @r2.command("big")
    async def big(args):
        return {"xs": list(range(args["n"]))}

    where: list[int] = []

    def encode(values: dict[str, Any]) -> bytes:
        where.append(threading.get_ident())
        return json.dumps(values).encode()

    d2 = Dispatcher(r2)
    try:
        small = await d2.call(Request("big", {"n": 10}, encode=encode))
        large = await d2.call(Request("big", {"n": 1_000_000}, encode=encode))
        chunks = [c async for c in d2.stream(Request("big", {"n": 1_000_000}, encode=encode))]
    finally:
        await d2.aclose()
    assert small.success and json.loads(small.payload)["xs"] == list(range(10))
    assert large.success and len(json.loads(large.payload)["xs"]) == 1_000_000
    assert len(chunks) == 1 and chunks[0].is_final and chunks[0].payload is not None
    loop_thread = threading.get_ident()
    assert where[0] == loop_thread and where[1] != loop_thread and where[2] != loop_thread


# -- call_now: inline handlers answered without waiting --------------------------------

now_reg = Registry()


@now_reg.command("quick", inline=True)
def quick(args):
    return {"doubled": args.get("x", 0) * 2}


@now_reg.command("quick_ctx", inline=True)
def quick_ctx(args, ctx):
    return {"rid": ctx.request_id}


@now_reg.command("quick_fail", inline=True)
def quick_fail(args):
    if args.get("exit"):
        raise SystemExit(3)
    raise InvalidArgument("no good")


@now_reg.command("slow")
def slow_now(args):
    return {}


async def test_call_now_answers_inline_handlers_and_counts_them():
    d = Dispatcher(now_reg)
    before = d.stats.requests
    r = d.call_now(Request("quick", {"x": 21}, encode=lambda v: json.dumps(v).encode()))
    assert r.success and r.result == {"doubled": 42} and r.payload == b'{"doubled": 42}'
    assert d.call_now(Request("quick_ctx", {}, request_id="r-7")).result == {"rid": "r-7"}
    assert d.stats.requests == before + 2 and d.stats.errors == 0


async def test_call_now_failures_are_results_like_call():
    d = Dispatcher(now_reg)
    r = d.call_now(Request("quick_fail", {}))
    assert not r.success and r.code == "INVALID_ARGUMENT" and r.error == "no good"
    r = d.call_now(Request("quick_fail", {"exit": True}))  # sys.exit() in a handler fails that call only
    assert not r.success and "SystemExit" in r.error
    assert d.stats.errors == 2
    assert (await d.call(Request("quick_fail", {}))).error == "no good"  # the same answer via call()


async def test_call_now_declines_what_must_wait_and_does_nothing_then():
    d = Dispatcher(now_reg)
    declined = [Request("slow", {}), Request("no_such", {}), Request("quick", {"session_id": "s"}),
                Request("quick", {}, session_id="s"), Request("quick", {}, decode=lambda: {})]
    assert [d.call_now(req) for req in declined] == [None] * len(declined)
    assert d.stats.requests == 0 and len(d.sessions) == 0
    d.closing = True
    assert d.call_now(Request("quick", {})) is None


def test_context_wait_wakes_on_cancel_from_another_thread():
    from snakepit_bridge.context import Context

    ctx = Context(request_id="r", command="c", deadline=None, session=None, log=None)
    assert not ctx.cancelled
    timer = threading.Timer(0.05, ctx.cancel)
    timer.start()
    started = time.monotonic()
    assert ctx.wait(5.0) is True and ctx.cancelled
    assert time.monotonic() - started < 2
    assert ctx.wait(5.0) is True  # already cancelled: at once
    fresh = Context(request_id="r", command="c", deadline=None, session=None, log=None)
    fresh.cancel()  # before any Event exists
    assert fresh.wait(5.0) is True
