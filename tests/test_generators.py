"""Pull-based generators (InitGenerator / GetNextBatch / CloseGenerator) against the real process."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid

import grpc
import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge.client import Client
from snakepit_bridge.generators import DEFAULT_BATCH
from tests.test_streaming import active_streams, state, wait_for

ADAPTER = ("--adapter", "tests.handlers_streaming")


BRIDGE_ARGS = ADAPTER  # for the shared bridge/client fixtures (conftest.py)


def tag() -> str:
    return uuid.uuid4().hex


def open_gen(c: Client, command: str, args: dict | None = None, **kw) -> str:
    r = c.init_generator(command, args or {}, **kw)
    assert r.error == "" and r.generator_id, r.error
    return r.generator_id


def drain(c: Client, gid: str, batch: int) -> list[list]:
    batches = []
    while True:
        chunks, more, err = c.next_batch(gid, batch)
        assert err == ""
        assert len(chunks) <= batch
        batches.append(chunks)
        if not more:
            return batches


@pytest.mark.parametrize("command", ["t_count_sync", "t_count_async"])
def test_batches_never_exceed_batch_size_and_end_with_one_final(client, command):
    gid = open_gen(client, command, {"n": 25, "tag": tag()})
    batches = drain(client, gid, 10)
    assert [len(b) for b in batches] == [10, 10, 6]
    chunks = [c for b in batches for c in b]
    assert [c.index for c in chunks] == list(range(26))
    assert [c.data for c in chunks[:25]] == [{"i": i} for i in range(25)]
    assert [c.is_final for c in chunks] == [False] * 25 + [True]


def test_batch_size_zero_means_the_default_and_negative_is_an_error(client):
    gid = open_gen(client, "t_count_async", {"n": 100, "tag": tag()})
    chunks, more, err = client.next_batch(gid, 0)
    assert err == "" and more and len(chunks) == DEFAULT_BATCH
    chunks, more, err = client.next_batch(gid, -1)
    assert chunks == [] and "batch_size" in err
    chunks, more, err = client.next_batch(gid, 1)  # still usable
    assert err == "" and chunks[0].data == {"i": DEFAULT_BATCH}
    assert client.close_generator(gid) == ""


def test_unknown_finished_and_closed_ids_are_errors_not_crashes(client):
    chunks, more, err = client.next_batch("nope", 5)
    assert (chunks, more) == ([], False) and "unknown generator id 'nope'" in err
    assert "unknown generator id" in client.close_generator("nope")

    gid = open_gen(client, "t_count_sync", {"n": 2, "tag": tag()})
    drain(client, gid, 10)
    chunks, more, err = client.next_batch(gid, 5)
    assert not more and "finished" in err

    gid = open_gen(client, "t_count_sync", {"tag": tag()})
    assert client.close_generator(gid) == ""
    assert client.close_generator(gid) == ""  # idempotent
    chunks, more, err = client.next_batch(gid, 5)
    assert not more and "closed by CloseGenerator" in err
    assert client.execute("ping").success


def test_close_runs_the_finalizer_and_active_streams_returns_to_zero(client):
    t = tag()
    gid = open_gen(client, "t_count_sync", {"tag": t})
    chunks, more, _ = client.next_batch(gid, 3)
    assert len(chunks) == 3 and more
    assert active_streams(client) >= 1
    assert not state(client, t)["closed"]
    assert client.close_generator(gid) == ""
    assert state(client, t)["closed"]  # closed before CloseGenerator answered
    wait_for(lambda: active_streams(client) == 0)


def test_handler_does_not_start_before_the_first_batch(client):
    t = tag()
    gid = open_gen(client, "t_count_async", {"tag": t})
    assert state(client, t)["produced"] == 0 and not state(client, t)["closed"]
    assert client.close_generator(gid) == ""


def test_unknown_command_and_bad_arguments_fail_at_init(bridge, client):
    r = client.init_generator("no_such_command")
    assert r.generator_id == "" and "unknown command 'no_such_command'" in r.error
    bad = client.stub.InitGenerator(pb.InitGeneratorRequest(
        command="t_count_sync", args={"n": b"\xff{"}, arg_encodings={"n": "json"}))
    assert bad.generator_id == "" and bad.error
    assert client.execute("ping").success


def test_errors_travel_in_chunks(client):
    gid = open_gen(client, "t_errors", {"n": 10, "bad": 1, "raise_at": 3})
    chunks = [c for b in drain(client, gid, 4) for c in b]
    assert chunks[1].error == "bad item" and not chunks[1].is_final
    assert chunks[-1].is_final and chunks[-1].error == "ValueError: boom at 3"
    assert len(chunks) == 4


def test_unary_command_as_a_generator_is_one_final_chunk(client):
    gid = open_gen(client, "echo", {"x": 1})
    chunks, more, err = client.next_batch(gid, 5)
    assert err == "" and not more and len(chunks) == 1 and chunks[0].is_final


def test_timeout_ms_bounds_the_generator_life(client):
    t = tag()
    gid = open_gen(client, "t_sleepy_stream", {"tag": t, "seconds": 30}, timeout_ms=300)
    started = time.monotonic()
    chunks, more, err = client.next_batch(gid, 5)
    assert time.monotonic() - started < 3
    assert err == "" and not more
    assert chunks[0].data == {"i": 0}
    assert chunks[-1].is_final and "deadline exceeded" in chunks[-1].error
    wait_for(lambda: state(client, t)["closed"])


def test_a_generator_nobody_pulls_is_closed_at_its_deadline(client):
    t = tag()
    gid = open_gen(client, "t_count_async", {"tag": t}, timeout_ms=200)
    client.next_batch(gid, 1)
    wait_for(lambda: state(client, t)["closed"], timeout=5)
    _, more, err = client.next_batch(gid, 1)
    assert not more and "deadline" in err


def test_next_batch_does_not_hold_the_event_loop(client):
    gid = open_gen(client, "t_sleepy_stream", {"tag": tag(), "seconds": 1.0})
    result: list = []
    worker = threading.Thread(target=lambda: result.append(client.next_batch(gid, 5)))
    worker.start()
    wait_for(lambda: active_streams(client) >= 1)
    started = time.monotonic()
    assert client.execute("ping").success
    assert time.monotonic() - started < 0.5  # answered while the batch waits
    worker.join(5)
    chunks, more, err = result[0]
    assert [c.data for c in chunks] == [{"i": 0}, {"i": 1}, {}] and not more


def test_a_batch_cut_off_by_the_rpc_deadline_loses_nothing(client):
    gid = open_gen(client, "t_sleepy_stream", {"tag": tag(), "seconds": 1.0})
    with pytest.raises(grpc.RpcError) as err:
        client.stub.GetNextBatch(pb.GetNextBatchRequest(generator_id=gid, batch_size=5), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    chunks, more, error = client.next_batch(gid, 5)
    assert error == "" and not more
    assert [c.data for c in chunks] == [{"i": 0}, {"i": 1}, {}]


def test_idle_generators_are_reaped_after_the_ttl(spawn_bridge):
    b = spawn_bridge(*ADAPTER, "--generator-ttl", "0.3")
    with Client(b.target) as c:
        t = tag()
        gid = open_gen(c, "t_count_sync", {"tag": t})
        c.next_batch(gid, 2)
        wait_for(lambda: state(c, t)["closed"], timeout=5)  # finalizer ran
        _, more, err = c.next_batch(gid, 2)
        assert not more and "generator ttl" in err
        wait_for(lambda: active_streams(c) == 0)
        assert "generator idle past its ttl" in b.stderr_text()


def test_max_generators_cap(spawn_bridge):
    b = spawn_bridge(*ADAPTER, "--max-generators", "2")
    with Client(b.target) as c:
        first = open_gen(c, "t_count_async", {"tag": tag()})
        open_gen(c, "t_count_async", {"tag": tag()})
        r = c.init_generator("t_count_async", {"tag": tag()})
        assert r.generator_id == "" and "too many open generators (2)" in r.error
        assert c.close_generator(first) == ""
        open_gen(c, "t_count_async", {"tag": tag()})


# -- in-process: the store without a socket ---------------------------------------------------


async def test_concurrent_batches_on_one_id_take_turns_and_lose_nothing():
    from snakepit_bridge.config import Config
    from snakepit_bridge.dispatch import Dispatcher, Request
    from snakepit_bridge.generators import GeneratorStore
    from snakepit_bridge.registry import Registry

    reg = Registry()
    closed: list[str] = []

    @reg.command("count")
    async def count(args):
        try:
            for i in range(args["n"]):
                yield {"i": i}
        finally:
            closed.append("count")

    d = Dispatcher(reg, Config())
    store = GeneratorStore(d, d.config)
    store.start()
    try:
        gid, err = await store.open(Request("count", {"n": 50}))
        assert err == ""
        results = await asyncio.gather(*(store.next_batch(gid, 7) for _ in range(10)))
        chunks = [c for batch, _, _ in results for c in batch]
        assert [c.index for c in chunks] == list(range(51))  # 50 items + the final, in order
        assert all(len(batch) <= 7 for batch, _, _ in results)
        assert closed == ["count"] and len(store) == 0
        gid2, _ = await store.open(Request("count", {"n": 10**9}))
        await store.next_batch(gid2, 3)
        await store.aclose()  # shutdown closes what is open, finalizers run
        assert closed == ["count", "count"]
        assert (await store.next_batch(gid2, 1))[2].endswith("the worker shut down")
    finally:
        await store.aclose()
        await d.aclose()


def test_a_batch_of_large_chunks_stops_short_of_the_message_limit(spawn_bridge):
    b = spawn_bridge(*ADAPTER, "--max-message-mb", "1")
    with Client(b.target) as c:
        gid = open_gen(c, "t_count_async", {"n": 20, "tag": tag(), "size": 100_000})
        chunks, more, err = c.next_batch(gid, 20)  # 2 MB asked for; 1 MB messages
        assert err == "" and more and 1 <= len(chunks) <= 5
        rest = [ch for batch in drain(c, gid, 20) for ch in batch]
        assert [ch.index for ch in chunks + rest] == list(range(21))  # nothing lost
