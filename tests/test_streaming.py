"""Streaming semantics against the real process: laziness, backpressure,
cancellation, deadlines, per-chunk errors, progress and ``active_streams``.

The handlers live in ``tests/handlers_streaming.py``; they count what they
produce and when their finalizers run, and ``t_state`` reports it. Waits poll a
condition with a timeout; nothing sleeps to wait for readiness.
"""
from __future__ import annotations

import statistics
import time
import uuid

import grpc
import psutil
import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge._proto import snakepit_pb2_grpc as pb_grpc
from snakepit_bridge.client import Client, encode_args

KINDS = ["sync", "async"]
BUFFER = 8  # the default --stream-buffer


BRIDGE_ARGS = ("--adapter", "tests.handlers_streaming")  # for the shared bridge/client fixtures (conftest.py)


def tag() -> str:
    return uuid.uuid4().hex


def state(c: Client, t: str = "") -> dict:
    return c.execute("t_state", {"tag": t}).result


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.005):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def settle(read, timeout: float = 5.0, quiet: float = 0.3) -> int:
    """Poll a counter until it stops moving for ``quiet`` s; its value."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
    raise AssertionError("counter never settled")


def active_streams(c: Client) -> int:
    return c.info(capabilities=False, stats=True).stats.active_streams


# -- laziness -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_first_chunk_of_a_million_item_stream_arrives_at_once(client, kind):
    t = tag()
    started = time.perf_counter()
    stream = client.stream(f"t_count_{kind}", {"n": 1_000_000, "tag": t})
    first = next(stream)
    elapsed = time.perf_counter() - started
    try:
        assert first.data == {"i": 0} and first.index == 0 and not first.is_final
        # The first chunk came at once (measured: 2-4 ms), and the stream is not
        # materialized: unread, the producer stops once our buffer and gRPC's
        # windows are full (measured: ~65,000 of these tiny chunks, ~1.3 MB).
        assert elapsed < 2.0
        assert state(client, t)["produced"] < 500_000
    finally:
        stream.cancel()


@pytest.mark.parametrize("kind", KINDS)
def test_producer_lead_is_bounded_by_our_buffer_plus_grpc_window(bridge, client, kind):
    """With BDP probing off, the client's HTTP/2 window is 64 KiB = one 64 KiB
    chunk, so what the producer runs ahead is our buffer plus a couple of
    chunks in flight (measured: 8-12 with --stream-buffer 8)."""
    t = tag()
    channel = grpc.insecure_channel(bridge.target, options=[("grpc.http2.bdp_probe", 0)])
    stub = pb_grpc.SnakepitBridgeStub(channel)
    raw, enc = encode_args({"n": 100_000, "tag": t, "size": 65_536})
    call = stub.ExecuteStream(pb.ExecuteRequest(command=f"t_count_{kind}", args=raw, arg_encodings=enc))
    try:
        next(call)
        produced = settle(lambda: state(client, t)["produced"])
        assert produced <= BUFFER + 8, produced
        # A slow reader: the lead stays bounded while it reads.
        leads = []
        for _ in range(10):
            r = next(call)
            leads.append(state(client, t)["produced"] - r.chunk_index - 1)
            time.sleep(0.01)
        assert max(leads) <= BUFFER + 8, leads
    finally:
        call.cancel()
        channel.close()


def test_memory_stays_flat_while_a_slow_client_reads_a_large_stream(bridge, client):
    """256 MiB streamed as 64 KiB chunks; the server's RSS grows by far less.
    With the default client (BDP on) gRPC itself buffers up to ~7 MB."""
    proc = psutil.Process(bridge.pid)
    t = tag()
    stream = client.stream("t_count_async", {"n": 4096, "tag": t, "size": 65_536})
    first = next(stream)
    base = proc.memory_info().rss
    peak = base
    count = 1
    for _ in stream:
        count += 1
        if count % 256 == 0:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.005)  # read slowly
    assert first.index == 0 and count == 4097
    assert peak - base < 64 * 1024 * 1024, (peak - base) / 1e6


# -- cancellation -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_closes_a_yielding_generator_promptly(client, kind):
    latencies = []
    for _ in range(20):
        t = tag()
        stream = client.stream(f"t_count_{kind}", {"tag": t, "delay": 0.001})
        for _ in range(3):
            next(stream)
        cancelled_at = time.monotonic()
        stream.cancel()
        st = wait_for(lambda t=t: (s := state(client, t))["closed"] and s)
        latencies.append(st["closed_at"] - cancelled_at)
    # The requirement is 10 ms; the machine is shared, so the test asserts a
    # generous median (measured: about 1 ms sync, under 1 ms async).
    assert statistics.median(latencies) < 0.05, latencies
    assert max(latencies) < 1.0, latencies


def test_a_thousand_cancels_leak_no_threads_memory_or_finalizers(bridge, client):
    proc = psutil.Process(bridge.pid)

    def cancel_many(n: int) -> None:
        for i in range(n):
            stream = client.stream("t_count_sync" if i % 2 else "t_count_async", {"tag": "many"})
            next(stream)
            stream.cancel()

    cancel_many(100)  # warm up: thread pool, allocator
    wait_for(lambda: active_streams(client) == 0)
    threads, rss = proc.num_threads(), proc.memory_info().rss
    before = state(client)
    cancel_many(900)
    wait_for(lambda: active_streams(client) == 0)
    after = wait_for(lambda: (s := state(client))["finalized"] == s["started"] and s)
    assert after["started"] - before["started"] == 900
    assert after["finalized"] - before["finalized"] == 900  # every finalizer ran
    # A leak would add a thread per sync stream (450 here); allow for pool growth under load.
    assert proc.num_threads() <= threads + 16, (threads, proc.num_threads())
    assert proc.memory_info().rss - rss < 20 * 1024 * 1024


@pytest.mark.parametrize("command", ["t_swallow_async", "t_swallow_sync"])
def test_a_handler_that_swallows_cancellation_does_not_leak_the_stream(bridge, client, command):
    t = tag()
    abandoned = bridge.stderr_text().count("abandoned")
    stream = client.stream(command, {"tag": t, "linger": 3.0})
    next(stream)
    assert active_streams(client) >= 1
    stream.cancel()
    # The stream is abandoned after a short wait (0.25 s), counted as closed, and logged ...
    wait_for(lambda: active_streams(client) == 0, timeout=2)
    assert not state(client, t)["closed"]  # (the handler really is still ignoring the close)
    wait_for(lambda: bridge.stderr_text().count("abandoned") > abandoned, timeout=2)
    # ... the worker keeps serving, and the handler's finalizer runs when it finally stops.
    assert client.execute("ping").success
    wait_for(lambda: state(client, t)["closed"], timeout=8)


# -- deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["t_sleepy_stream", "t_sleepy_stream_sync"])
def test_stream_past_its_deadline_ends_with_a_deadline_chunk(client, command):
    t = tag()
    started = time.monotonic()
    chunks = list(client.stream(command, {"tag": t, "seconds": 30}, timeout_ms=300))
    assert time.monotonic() - started < 3
    assert [c.is_final for c in chunks] == [False, True]
    assert chunks[0].data == {"i": 0}
    assert "deadline exceeded" in chunks[-1].error
    wait_for(lambda: state(client, t)["closed"])  # the generator was closed


def test_swallowing_handler_still_gets_its_deadline_chunk(client):
    chunks = list(client.stream("t_swallow_async", {"tag": tag(), "linger": 0.5}, timeout_ms=200))
    assert chunks[-1].is_final and "deadline exceeded" in chunks[-1].error
    assert sum(c.is_final for c in chunks) == 1


@pytest.mark.parametrize("command", ["t_slow_sync", "t_slow_async"])
def test_slow_unary_past_its_deadline_is_cut_off(client, command):
    t = tag()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        client.execute(command, {"tag": t, "seconds": 30}, timeout_ms=300)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "deadline exceeded" in err.value.details()
    assert time.monotonic() - started < 3
    wait_for(lambda: state(client, t)["closed"])  # told to stop, and it did


@pytest.mark.parametrize("command", ["t_slow_sync", "t_slow_async"])
def test_client_grpc_deadline_also_cuts_off_unary(client, command):
    t = tag()
    with pytest.raises(grpc.RpcError) as err:
        client.execute(command, {"tag": t, "seconds": 30}, timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: state(client, t)["closed"])


def test_client_grpc_deadline_closes_a_stream(client):
    """The server knows the RPC's deadline too and races gRPC to it: the client
    sees either our final deadline chunk or gRPC's DEADLINE_EXCEEDED status."""
    t = tag()
    chunks = []
    try:
        for chunk in client.stream("t_sleepy_stream", {"tag": t, "seconds": 30}, timeout=0.3):
            chunks.append(chunk)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        assert chunks[-1].is_final and "deadline exceeded" in chunks[-1].error
    wait_for(lambda: state(client, t)["closed"])


def test_execute_on_a_stream_past_its_deadline_is_deadline_exceeded(client):
    with pytest.raises(grpc.RpcError) as err:
        client.execute("t_sleepy_stream", {"tag": tag(), "seconds": 30}, timeout_ms=200)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# -- per-chunk errors, finals, empty streams --------------------------------------------------


@pytest.mark.parametrize("command", ["t_errors", "t_errors_async"])
def test_a_per_item_error_does_not_end_the_stream(client, command):
    chunks = list(client.stream(command, {"n": 5, "bad": 3}))
    assert [c.index for c in chunks] == [0, 1, 2, 3, 4, 5]
    bad = chunks[3]
    assert bad.error == "bad item" and bad.data == {"item": 3} and not bad.is_final
    assert [c.is_final for c in chunks] == [False] * 5 + [True]
    assert chunks[-1].error == "" and chunks[4].data == {"i": 4}


@pytest.mark.parametrize("command", ["t_errors", "t_errors_async"])
def test_an_exception_ends_the_stream_with_one_final_error_chunk(client, command):
    chunks = list(client.stream(command, {"n": 10, "bad": 1, "raise_at": 4}))
    assert [c.is_final for c in chunks] == [False] * 4 + [True]
    assert chunks[-1].error == "ValueError: boom at 4"
    assert "traceback" in chunks[-1].data
    assert chunks[1].error == "bad item"


@pytest.mark.parametrize("command", ["t_empty_sync", "t_empty_async"])
def test_an_empty_generator_gives_exactly_one_final_chunk(client, command):
    chunks = list(client.stream(command))
    assert len(chunks) == 1
    assert chunks[0].is_final and chunks[0].index == 0 and chunks[0].error == "" and chunks[0].data == {}


def test_final_marker_ends_the_stream(client):
    chunks = list(client.stream("t_final"))
    assert [c.data for c in chunks] == [{"i": 0}, {"i": 1}, {"total": 2}]
    assert [c.is_final for c in chunks] == [False, False, True]


def test_unknown_command_streams_one_final_error(client):
    chunks = list(client.stream("no_such_command"))
    assert len(chunks) == 1 and chunks[0].is_final and "unknown command" in chunks[0].error


# -- progress ---------------------------------------------------------------------------------


def test_progress_chunks(client):
    chunks = list(client.stream("t_progress", {"total": 4}))
    progress = [c.data for c in chunks[:-1]]
    assert [p["progress"] for p in progress] == [1, 2, 3, 4]
    assert [p["progress_percent"] for p in progress] == [25.0, 50.0, 75.0, 100.0]
    assert all(p["total"] == 4 and p["stage"] == "work" and p["elapsed_s"] >= 0 for p in progress)
    assert progress[0]["message"] == "step 1" and progress[-1]["eta_s"] == 0.0
    assert chunks[-1].data == {"done": True} and chunks[-1].is_final


# -- active_streams ---------------------------------------------------------------------------


def test_active_streams_counts_streams_being_produced(client):
    wait_for(lambda: active_streams(client) == 0)
    streams = [client.stream(f"t_count_{k}", {"tag": tag()}) for k in ("sync", "async", "sync")]
    for s in streams:
        next(s)
    assert active_streams(client) == 3
    for s in streams:
        s.cancel()
    wait_for(lambda: active_streams(client) == 0, timeout=2)
