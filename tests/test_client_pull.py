"""``Client.pull`` and ``python -m snakepit_bridge.client pull`` against the real process.

The handlers (``tests/handlers_streaming.py``) record when their ``finally``
runs; ``t_state`` reports it, so every early exit here is observed on the
bridge side.
"""
from __future__ import annotations

import gc
import subprocess
import sys

import orjson
import pytest

from snakepit_bridge.client import Client, GeneratorError, Pull
from tests.bridge_process import ROOT
from tests.test_streaming import BUFFER, active_streams, settle, state, tag, wait_for

BRIDGE_ARGS = ("--adapter", "tests.handlers_streaming")  # for the shared bridge/client fixtures (conftest.py)
KINDS = ["sync", "async"]


def gone_because(c: Client, gid: str) -> str:
    """Why the bridge no longer holds ``gid`` ("" if it still does)."""
    _, _, err = c.next_batch(gid, 1)
    return err


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_exhausting_a_pull_yields_every_chunk_and_closes_the_generator(client, kind, prefetch):
    t = tag()
    pull = client.pull(f"t_count_{kind}", {"n": 25, "tag": t}, batch_size=10, prefetch=prefetch)
    assert isinstance(pull, Pull) and pull.generator_id
    chunks = list(pull)
    assert [c.index for c in chunks] == list(range(26))
    assert [c.data for c in chunks[:25]] == [{"i": i} for i in range(25)]
    assert [c.is_final for c in chunks] == [False] * 25 + [True]
    assert state(client, t)["closed"]
    assert "finished" in gone_because(client, pull.generator_id)
    assert list(pull) == []  # stays exhausted


def test_pull_yields_the_chunks_stream_yields(client):
    def fields(chunks):
        return [(c.index, c.is_final, c.error, c.data) for c in chunks]

    pulled = fields(client.pull("t_errors", {"n": 5, "bad": 2}, batch_size=2))
    assert pulled == fields(client.stream("t_errors", {"n": 5, "bad": 2}))
    assert fields(client.pull("t_final", batch_size=2)) == fields(client.stream("t_final"))


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_break_out_of_a_for_loop_closes_the_generator_at_once(client, kind, prefetch):
    t = tag()
    pull = client.pull(f"t_count_{kind}", {"tag": t}, batch_size=4, prefetch=prefetch)
    gid = pull.generator_id
    for chunk in pull:
        if chunk.index == 5:
            break
    del pull, chunk  # the loop dropped its iterator: the finalizer sends CloseGenerator
    wait_for(lambda: state(client, t)["closed"], timeout=5)  # the ttl is 300 s
    assert "closed by CloseGenerator" in gone_because(client, gid)  # not the reaper
    wait_for(lambda: active_streams(client) == 0)


def test_an_exception_in_a_with_block_closes_before_it_propagates(client):
    t = tag()
    with pytest.raises(ZeroDivisionError):
        with client.pull("t_count_sync", {"tag": t}, batch_size=3) as chunks:
            for chunk in chunks:
                if chunk.index == 4:
                    1 / 0  # noqa: B018
    assert state(client, t)["closed"]  # already: close() waited for CloseGenerator


def test_close_closes_at_once_ends_the_iteration_and_is_idempotent(client):
    t = tag()
    pull = client.pull("t_count_async", {"tag": t}, batch_size=5)
    assert next(pull).data == {"i": 0}
    pull.close()
    assert state(client, t)["closed"]
    assert "closed by CloseGenerator" in gone_because(client, pull.generator_id)
    with pytest.raises(StopIteration):
        next(pull)
    pull.close()


def test_a_collected_iterator_closes_its_generator(client):
    t = tag()
    pull = client.pull("t_count_sync", {"tag": t}, batch_size=5)
    next(pull)
    gid = pull.generator_id
    del pull
    gc.collect()
    wait_for(lambda: state(client, t)["closed"], timeout=5)  # the ttl is 300 s
    assert "closed by CloseGenerator" in gone_because(client, gid)


@pytest.mark.parametrize("prefetch", [True, False])
def test_prefetch_asks_for_one_batch_ahead_and_never_more(client, prefetch):
    t, size = tag(), 50
    pull = client.pull("t_count_sync", {"tag": t}, batch_size=size, prefetch=prefetch)
    try:
        assert next(pull).data == {"i": 0}  # the caller is "working" on the first batch
        produced = settle(lambda: state(client, t)["produced"])
        # The producer runs ahead of what was asked by the stream buffer, plus
        # the chunk in hand on each side of it.
        slack = BUFFER + 4
        if prefetch:
            assert 2 * size <= produced <= 2 * size + slack
        else:
            assert size <= produced <= size + slack
    finally:
        pull.close()


def test_per_item_errors_are_chunks_and_the_iteration_goes_on(client):
    chunks = list(client.pull("t_errors", {"n": 6, "bad": 1}, batch_size=2))
    assert chunks[1].error == "bad item" and not chunks[1].is_final
    assert [c.data.get("i") for c in chunks[:-1]] == [0, None, 2, 3, 4, 5]
    assert chunks[-1].is_final and chunks[-1].error == ""
    failed = list(client.pull("t_errors", {"n": 6, "bad": 1, "raise_at": 3}, batch_size=2))
    assert failed[-1].is_final and failed[-1].error == "ValueError: boom at 3" and len(failed) == 4


def test_an_unknown_command_fails_at_pull(client):
    with pytest.raises(GeneratorError, match="could not open a generator for 'no_such_command'.*unknown command"):
        client.pull("no_such_command")


def test_a_generator_closed_behind_its_back_raises_naming_it(client):
    pull = client.pull("t_count_async", {"tag": tag()}, batch_size=2, prefetch=False)
    next(pull), next(pull)
    assert client.close_generator(pull.generator_id) == ""
    with pytest.raises(GeneratorError) as err:
        next(pull)
    assert pull.generator_id in str(err.value) and "no longer open" in str(err.value)
    assert err.value.generator_id == pull.generator_id and err.value.command == "t_count_async"
    with pytest.raises(StopIteration):
        next(pull)


def test_an_expired_generator_raises_naming_it(client):
    t = tag()
    pull = client.pull("t_count_async", {"tag": t}, batch_size=1, prefetch=False, timeout_ms=200)
    next(pull)
    wait_for(lambda: state(client, t)["closed"], timeout=5)  # the reaper closed it at its deadline
    with pytest.raises(GeneratorError, match=f"generator {pull.generator_id}.*deadline"):
        next(pull)


def test_a_failed_batch_raises_naming_the_generator_and_closes_it(client):
    t = tag()
    pull = client.pull("t_sleepy_stream", {"tag": t, "seconds": 30}, batch_size=5, timeout=0.3)
    with pytest.raises(GeneratorError, match=f"generator {pull.generator_id}: GetNextBatch failed: DEADLINE_EXCEEDED"):
        list(pull)
    assert state(client, t)["closed"]


# -- the CLI ------------------------------------------------------------------------------


def cli(bridge, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakepit_bridge.client", "--port", str(bridge.port), *args],
                          cwd=ROOT, capture_output=True, timeout=30)


def test_cli_pull_prints_chunks_and_closes_the_generator_at_the_limit(bridge, client):
    t = tag()
    run = cli(bridge, "pull", "t_count_sync", orjson.dumps({"tag": t}).decode(), "--batch-size", "2", "--limit", "3")
    assert run.returncode == 0, run.stderr
    lines = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert lines == [{"index": i, "is_final": False, "error": "", "data": {"i": i}} for i in range(3)]
    assert state(client, t)["closed"]


def test_cli_pull_to_the_end_and_its_exit_codes(bridge):
    run = cli(bridge, "pull", "t_count_async", '{"n": 3}')
    assert run.returncode == 0, run.stderr
    lines = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2, 3] and lines[-1]["is_final"]
    failed = cli(bridge, "pull", "t_errors", '{"raise_at": 1}')
    assert failed.returncode == 1 and b"boom at 1" in failed.stdout
    unknown = cli(bridge, "pull", "no_such_command")
    assert unknown.returncode == 2 and b"could not open a generator" in unknown.stderr


def test_cli_bad_arguments_are_usage_errors_not_tracebacks(bridge):
    for args in (["call", "echo", "operation=add"], ["call", "echo", "[1]"], ["pull", "t_count_sync", "{}",
                                                                           "--batch-size", "0"]):
        run = cli(bridge, *args)
        assert run.returncode == 2 and b"Traceback" not in run.stderr, (args, run.stderr)
    # Ints of any length in ARGS stay exact (as the bridge's own JSON rules keep them).
    run = cli(bridge, "call", "echo", '{"n": 123456789012345678901234567890}')
    assert run.returncode == 0 and b"123456789012345678901234567890" in run.stdout, run.stdout


def test_elixir_style_client_sends_what_jason_would(bridge):
    """Big ints and numpy arrays as JSON (Jason encodes both), no TypeError."""
    import numpy as np

    from snakepit_bridge.client import Client

    with Client(bridge.target, elixir_style=True) as old:
        r = old.execute("echo", {"n": 2**100, "a": np.arange(3), "nested": {"a": np.arange(2)}})
        assert r.success and r.result["echoed"] == {"n": 2**100, "a": [0, 1, 2], "nested": {"a": [0, 1]}}, r
