"""``AsyncClient`` against the real process: the same surface as ``Client``, and
cancelling the iterating task cancels the stream or closes the pulled generator
(the handler's ``finally`` is observed through ``t_state``)."""
from __future__ import annotations

import asyncio
import gc
import time

import grpc
import pytest

from snakepit_bridge.client import AsyncClient, AsyncPull, GeneratorError
from tests.test_streaming import tag

BRIDGE_ARGS = ("--adapter", "tests.handlers_streaming")  # for the shared bridge/client fixtures (conftest.py)


@pytest.fixture
async def aclient(bridge):
    async with AsyncClient(bridge.target) as c:
        await c.wait_ready()
        yield c


async def astate(c: AsyncClient, t: str) -> dict:
    return (await c.execute("t_state", {"tag": t})).result


async def until(predicate, timeout: float = 5.0):
    """Await ``predicate()`` until it is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := await predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)
    return value


async def closed(c: AsyncClient, t: str) -> bool:
    return (await astate(c, t))["closed"]


async def test_unary_calls_health_and_info(aclient, client):
    args = {"x": [1, 2], "s": "text", "b": b"\x00\xff"}
    r = await aclient.execute("echo", args)
    assert r.success and r.result["echoed"] == args == client.execute("echo", args).result["echoed"]
    assert r.encodings == client.execute("echo", args).encodings
    sid = tag()
    assert (await aclient.execute_in_session(sid, "echo", {"v": 1})).result["echoed"] == {"v": 1}
    assert (await aclient.health(worker_id="w1")).healthy
    info = await aclient.info()
    assert "t_count_async" in info.supported_commands


async def test_stream_yields_what_the_blocking_client_yields(aclient, client):
    def fields(chunks):
        return [(c.index, c.is_final, c.error, c.data) for c in chunks]

    got = [c async for c in aclient.stream("t_errors", {"n": 5, "bad": 2})]
    assert fields(got) == fields(client.stream("t_errors", {"n": 5, "bad": 2}))


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_cancelling_the_task_that_iterates_a_stream_cancels_the_call(aclient, kind):
    t = tag()
    seen = asyncio.Event()

    async def consume():
        async for _chunk in aclient.stream(f"t_count_{kind}", {"tag": t, "delay": 0.01}):
            seen.set()

    task = asyncio.create_task(consume())
    await seen.wait()
    assert not await closed(aclient, t)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: closed(aclient, t))


async def test_leaving_an_async_with_stream_cancels_the_call(aclient):
    t = tag()
    async with aclient.stream("t_count_async", {"tag": t}) as chunks:
        async for chunk in chunks:
            if chunk.index == 3:
                break
    await until(lambda: closed(aclient, t))


@pytest.mark.parametrize("prefetch", [True, False])
async def test_pull_to_the_end(aclient, prefetch):
    t = tag()
    pull = aclient.pull("t_count_sync", {"n": 12, "tag": t}, batch_size=5, prefetch=prefetch)
    assert isinstance(pull, AsyncPull) and pull.generator_id == ""  # opened on first use
    chunks = [c async for c in pull]
    assert pull.generator_id
    assert [c.data for c in chunks[:-1]] == [{"i": i} for i in range(12)] and chunks[-1].is_final
    assert await closed(aclient, t)


async def test_cancelling_a_task_waiting_for_a_batch_closes_the_generator(aclient):
    t = tag()
    got: list = []

    async def consume():
        # 20 ms an item, 1000 a batch: the first batch takes 20 s.
        async for chunk in aclient.pull("t_count_async", {"tag": t, "delay": 0.02}, batch_size=1000):
            got.append(chunk)

    task = asyncio.create_task(consume())
    await until(lambda: _started(aclient, t))  # the first item is out; the batch waits for more
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: closed(aclient, t))
    assert got == []  # the batch never completed


async def _started(c: AsyncClient, t: str) -> bool:
    return (await astate(c, t))["produced"] >= 1


async def test_cancelling_a_task_working_on_a_chunk_closes_the_generator(aclient):
    t = tag()
    working = asyncio.Event()

    async def consume():
        async for _chunk in aclient.pull("t_count_async", {"tag": t}, batch_size=4):
            working.set()
            await asyncio.sleep(30)  # the caller's own work, cancelled

    task = asyncio.create_task(consume())
    await working.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gc.collect()  # the dropped iterator's finalizer schedules the close
    await until(lambda: closed(aclient, t))


async def test_async_with_closes_before_an_exception_propagates(aclient):
    t = tag()
    with pytest.raises(ZeroDivisionError):
        async with aclient.pull("t_count_sync", {"tag": t}, batch_size=3) as chunks:
            assert chunks.generator_id
            async for chunk in chunks:
                if chunk.index == 4:
                    1 / 0  # noqa: B018
    assert await closed(aclient, t)  # already: aclose() waited for CloseGenerator
    await chunks.aclose()  # idempotent


async def test_pull_errors_name_the_generator(aclient):
    with pytest.raises(GeneratorError, match="could not open a generator for 'no_such_command'"):
        async for _ in aclient.pull("no_such_command"):
            pass
    pull = await aclient.pull("t_count_async", {"tag": tag()}, batch_size=2, prefetch=False).open()
    await pull.__anext__()
    assert await aclient.close_generator(pull.generator_id) == ""
    await pull.__anext__()  # the rest of the batch in hand
    with pytest.raises(GeneratorError, match=f"generator {pull.generator_id}.*no longer open"):
        await pull.__anext__()
    t = tag()
    slow = aclient.pull("t_sleepy_stream", {"tag": t, "seconds": 30}, batch_size=5, timeout=0.3)
    with pytest.raises(GeneratorError, match="GetNextBatch failed: DEADLINE_EXCEEDED") as err:
        async for _ in slow:
            pass
    assert err.value.generator_id == slow.generator_id
    assert await closed(aclient, t)


async def test_a_failed_call_raises_the_grpc_error():
    async with AsyncClient("127.0.0.1:1") as c:  # nothing listens there
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.execute("ping", timeout=1)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
