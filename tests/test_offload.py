"""Large JSON is encoded off the event loop, for every handler kind (in-process:
the encoder records the thread it ran in; docs/protocol.md, "Values the bridge sends")."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from snakepit_bridge.codecs import ACCEPT_NONE, encode_map
from snakepit_bridge.dispatch import Dispatcher, Request
from snakepit_bridge.registry import Registry

reg = Registry()
BIG = list(range(300_000))  # ~2 MB of JSON: past the 1 MiB offload bound
SMALL = [1, 2, 3]


def value(args: dict) -> list:
    return BIG if args.get("big") else SMALL


@reg.command("sync")
def sync_(args):
    return {"v": value(args)}


@reg.command("coro")
async def coro(args):
    return {"v": value(args)}


@reg.command("sgen")
def sgen(args):
    yield {"v": value(args)}


@reg.command("agen")
async def agen(args):
    yield {"v": value(args)}
    yield {"v": value(args)}


class Recorder:
    """An encoder (as the gRPC transport's, for a 0.3 caller) that notes where it ran."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def __call__(self, data: dict[str, Any]):
        self.threads.append(threading.current_thread())
        return encode_map(data, 10_240, ACCEPT_NONE)


async def run(command: str, big: bool, streamed: bool) -> list[threading.Thread]:
    d = Dispatcher(reg)
    enc = Recorder()
    req = Request(command, {"big": big}, encode=enc)
    try:
        if streamed:
            chunks = [c async for c in d.stream(req)]
            assert chunks[-1].is_final and not chunks[-1].error
        else:
            r = await d.call(req)
            assert r.success, r.error
            assert r.payload is not None
    finally:
        await d.aclose()
    return enc.threads


@pytest.mark.parametrize("streamed", [False, True], ids=["call", "stream"])
@pytest.mark.parametrize("command", ["sync", "coro", "sgen", "agen"])
def test_big_json_is_encoded_off_the_loop(command, streamed):
    loop_thread = threading.current_thread()  # asyncio.run runs the loop here
    threads = asyncio.run(run(command, True, streamed))
    big = threads if not streamed else threads[:-1] if command in ("sgen", "agen") else threads
    assert big and all(t is not loop_thread for t in big), (command, streamed, [t.name for t in threads])


def test_small_results_of_coroutines_stay_on_the_loop():
    """No thread hop for the common small answer."""
    assert asyncio.run(run("coro", False, False)) == [threading.current_thread()]
    assert all(t is threading.current_thread() for t in asyncio.run(run("agen", False, True)))
