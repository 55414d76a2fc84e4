"""The Python client's pull iterator: does prefetch hide the round trips?

A bridge-side producer spends ~1 ms per item (``bench_pull_work``) and the
consumer spends ~1 ms per item too (both sleep, so neither takes a core from
the other). Pulling without prefetch alternates the two (about 2 ms an item);
with prefetch the next batch is produced while the caller works on the
current one, as a server stream is. ``AsyncClient.pull`` is measured the same
way with a consumer that awaits its 1 ms. The modes take turns, ``rounds`` times;
the figures are medians, with the bridge's CPU per item beside them.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Callable, Iterable

from snakepit_bridge.client import AsyncClient, Client, StreamChunk

from .procs import Server
from .report import Row, median

WORK_S = 0.001
COMMAND = "bench_pull_work"


def _consume(chunks: Iterable[StreamChunk]) -> int:
    n = 0
    for chunk in chunks:
        if chunk.error:
            raise RuntimeError(f"chunk {chunk.index} failed: {chunk.error}")
        if chunk.is_final:
            break
        time.sleep(WORK_S)  # the caller's own work on the item
        n += 1
    return n


async def _aconsume(chunks: AsyncIterable[StreamChunk]) -> int:
    n = 0
    async for chunk in chunks:
        if chunk.error:
            raise RuntimeError(f"chunk {chunk.index} failed: {chunk.error}")
        if chunk.is_final:
            break
        await asyncio.sleep(WORK_S)  # the caller's own (awaited) work on the item
        n += 1
    return n


async def _apull(bridge: Server, args: dict, batch: int, prefetch: bool) -> tuple[int, float]:
    async with AsyncClient(bridge.target) as c:
        t0 = time.perf_counter()
        n = await _aconsume(c.pull(COMMAND, args, batch_size=batch, prefetch=prefetch))
        return n, time.perf_counter() - t0


def pull(bridge: Server, items: int, batch: int, rounds: int) -> list[Row]:
    section = "Client pull (producer ~1 ms/item, consumer ~1 ms/item)"
    args = {"count": items, "work_ms": WORK_S * 1000}
    with Client(bridge.target) as c:
        c.wait_ready()
        modes: dict[str, Callable[[dict], Iterable[StreamChunk]]] = {
            f"Client.pull, prefetch (batch {batch})": lambda a: c.pull(COMMAND, a, batch_size=batch),
            f"Client.pull, prefetch=False (batch {batch})":
                lambda a: c.pull(COMMAND, a, batch_size=batch, prefetch=False),
            "Client.stream()": lambda a: c.stream(COMMAND, a),
        }
        amodes = {f"AsyncClient.pull, prefetch (batch {batch}; awaits asyncio.sleep)": True,
                  f"AsyncClient.pull, prefetch=False (batch {batch}; awaits asyncio.sleep)": False}
        for make in modes.values():  # warm up
            _consume(make({"count": 20, "work_ms": 0}))
        names = [*modes, *amodes]
        rates: dict[str, list[float]] = {name: [] for name in names}
        cpus: dict[str, list[float]] = {name: [] for name in names}
        alone: list[float] = []
        for _ in range(rounds):
            for name, make in modes.items():
                cpu = bridge.cpu()
                t0 = time.perf_counter()
                n = _consume(make(args))
                elapsed = time.perf_counter() - t0
                if n != items:
                    raise RuntimeError(f"{name}: {n} items of {items}")
                rates[name].append(n / elapsed)
                cpus[name].append((bridge.cpu() - cpu) / n * 1e6)
            for name, prefetch in amodes.items():
                cpu = bridge.cpu()
                n, elapsed = asyncio.run(_apull(bridge, args, batch, prefetch))
                if n != items:
                    raise RuntimeError(f"{name}: {n} items of {items}")
                rates[name].append(n / elapsed)
                cpus[name].append((bridge.cpu() - cpu) / n * 1e6)
            t0 = time.perf_counter()
            for _ in range(items):
                time.sleep(WORK_S)
            alone.append(items / (time.perf_counter() - t0))
    rows = [Row(section, name, "items/s", median(rates[name]), None, higher_is_better=True,
                bridge_cpu=median(cpus[name]), cpu_unit="µs/item") for name in names]
    rows.append(Row(section, "ceiling: the consumer alone, no calls", "items/s", median(alone), None,
                    higher_is_better=True))
    return rows
