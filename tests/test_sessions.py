"""Sessions against the real bridge process: routes, isolation, expiry,
eviction, close hooks (also at SIGTERM), the size cap and concurrency."""
from __future__ import annotations

import json
import os
import selectors
import struct
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from snakepit_bridge.client import Client
from tests.bridge_process import ROOT, SCRIPT, Bridge

ADAPTER = ("--adapter", "tests.handlers_sessions")


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``condition()`` until it is truthy (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def records(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def active(client: Client) -> int:
    return client.info(capabilities=False).stats.active_sessions


BRIDGE_ARGS = ADAPTER  # for the shared bridge/client fixtures (conftest.py)


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:8]}"


# -- routes and isolation ----------------------------------------------------------------


def test_both_routes_reach_one_session(client):
    s = sid()
    assert client.execute_in_session(s, "store", {"key": "a", "value": 1}).success
    r = client.execute("retrieve", {"key": "a", "session_id": s})  # how a 0.3 GRPCWorker calls
    assert r.success and r.result["value"] == 1 and r.result["session_id"] == s
    assert client.execute("store", {"key": "b", "value": [1, 2], "session_id": s}).success
    assert client.execute_in_session(s, "retrieve", {"key": "b"}).result["value"] == [1, 2]
    chunks = list(client.stream("retrieve", {"key": "b"}, session_id=s))  # ExecuteInSessionStream
    assert chunks[-1].is_final and chunks[-1].data["value"] == [1, 2]
    streamed = list(client.stream("session_counter_stream", {"count": 3}, session_id=s))
    assert [c.data.get("streamed") for c in streamed[:3]] == [1, 2, 3]
    assert client.execute("retrieve", {"key": "streamed", "session_id": s}).result["value"] == 3
    info = client.execute_in_session(s, "session_info").result
    assert info["keys"] == ["a", "b", "streamed"] and info["session_id"] == s


def test_elixir_style_args_session_id_reaches_the_session(bridge):
    s = sid()
    with Client(bridge.target, elixir_style=True) as ex, Client(bridge.target) as c:
        assert ex.execute("store", {"key": "k", "value": "v", "session_id": s}).success
        assert c.execute_in_session(s, "retrieve", {"key": "k"}).result["value"] == "v"


def test_elixir_style_numeric_session_id_reaches_the_session(bridge):
    """Elixir sends strings raw, so the id "4242" arrives as the JSON number 4242."""
    with Client(bridge.target, elixir_style=True) as ex, Client(bridge.target) as c:
        assert ex.execute("store", {"key": "k", "value": "v", "session_id": "4242"}).success
        assert c.execute_in_session("4242", "retrieve", {"key": "k"}).result.get("value") == "v"


def test_sessions_are_isolated(client):
    a, b = sid(), sid()
    client.execute_in_session(a, "store", {"key": "x", "value": "from a"})
    client.execute_in_session(b, "store", {"key": "x", "value": "from b"})
    client.execute_in_session(b, "store", {"key": "only_b", "value": 1})
    assert client.execute_in_session(a, "retrieve", {"key": "x"}).result["value"] == "from a"
    assert client.execute_in_session(b, "retrieve", {"key": "x"}).result["value"] == "from b"
    missing = client.execute_in_session(a, "retrieve", {"key": "only_b"})
    assert not missing.success and "'only_b'" in missing.error and a in missing.error
    # The worker-global store (no session) is a third, separate place.
    assert not client.execute("retrieve", {"key": "x"}).success
    assert client.execute("store", {"key": "x", "value": "global"}).success
    assert client.execute("retrieve", {"key": "x"}).result["value"] == "global"
    assert client.execute_in_session(a, "retrieve", {"key": "x"}).result["value"] == "from a"


def test_missing_key_and_missing_session_are_clear_errors(client):
    r = client.execute_in_session(sid(), "retrieve", {"key": "nope"})
    assert not r.success and "key 'nope' not found" in r.error
    for cmd in ("session_info", "end_session"):
        r = client.execute(cmd)
        assert not r.success and "needs a session" in r.error and cmd in r.error
    r = client.execute_in_session(sid(), "store", {"value": 1})
    assert not r.success and "'key'" in r.error
    assert client.execute("ping").success  # and the worker keeps serving


def test_delete_and_end_session(client, tmp_path):
    s, record = sid(), tmp_path / "hooks.txt"
    client.execute_in_session(s, "store", {"key": "k", "value": 1})
    assert client.execute_in_session(s, "delete", {"key": "k"}).result["deleted"] is True
    assert client.execute_in_session(s, "delete", {"key": "k"}).result["deleted"] is False
    client.execute_in_session(s, "open_resource", {"name": "model", "record": str(record)})
    assert client.execute_in_session(s, "session_info").result["resources"] == ["model"]
    r = client.execute_in_session(s, "end_session")
    assert r.success and r.result["existed"] is True
    assert records(record) == [f"{s} model"]  # end_session waits for its hooks
    assert client.execute_in_session(sid(), "end_session").result["existed"] is False


def test_get_info_counts_real_sessions(tmp_path):
    with Bridge(*ADAPTER) as b, Client(b.target) as c:
        c.wait_ready()
        assert active(c) == 0
        c.execute("store", {"key": "g", "value": 1})  # worker-global: not a session
        assert active(c) == 0
        for s in ("i1", "i2", "i3"):
            c.execute_in_session(s, "ping")
        c.execute("ping", {"session_id": "i4"})
        assert active(c) == 4
        assert c.execute("info").result["active_sessions"] == 4
        c.execute_in_session("i1", "end_session")
        assert active(c) == 3
        assert c.execute("list_sessions").result["count"] == 3


# -- expiry, eviction, hooks -------------------------------------------------------------------


def test_ttl_expiry_runs_hooks_once_and_spares_busy_sessions(tmp_path):
    record = tmp_path / "hooks.txt"
    with Bridge(*ADAPTER, "--session-ttl", "0.5") as b, Client(b.target) as c:
        c.wait_ready()
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(c.execute_in_session, "busy", "hold",
                               {"gate": "g1", "timeout": 20, "record": str(record)})
            wait_until(lambda: c.execute("held", {"gate": "g1"}).result["held"], what="hold to start")
            c.execute_in_session("idle", "open_resource", {"name": "r", "record": str(record)})
            c.execute_in_session("idle", "store", {"key": "k", "value": 1})
            wait_until(lambda: "idle r" in records(record), what="idle session to expire")
            # "busy" has been idle-by-clock for longer than its ttl, but its call is in flight.
            (busy,) = c.execute("list_sessions").result["sessions"]
            assert busy["session_id"] == "busy" and busy["resources"] == ["r"] and busy["age_s"] > 0.5
            c.execute("release", {"gate": "g1"})
            assert held.result(10).success
        wait_until(lambda: "busy r" in records(record), what="busy session to expire after its call")
        wait_until(lambda: active(c) == 0, what="no sessions left")
        # A new call with the old id starts an empty session.
        assert not c.execute_in_session("idle", "retrieve", {"key": "k"}).success
        assert b.stop() == 0
    assert sorted(records(record)) == ["busy r", "idle r"]


def test_lru_eviction_and_sigterm_run_each_hook_exactly_once(tmp_path):
    record = tmp_path / "hooks.txt"
    with Bridge(*ADAPTER, "--max-sessions", "3") as b, Client(b.target) as c:
        c.wait_ready()
        for s in ("s1", "s2", "s3"):
            assert c.execute_in_session(s, "open_resource", {"name": "r", "record": str(record)}).success
        c.execute_in_session("s1", "ping")  # s1 used again: s2 is now least recently used
        c.execute("open_resource", {"name": "r", "record": str(record), "session_id": "s4"})
        wait_until(lambda: records(record) == ["s2 r"], what="s2 to be evicted")
        assert active(c) == 3
        ids = {s["session_id"] for s in c.execute("list_sessions").result["sessions"]}
        assert ids == {"s1", "s3", "s4"}
        # Explicit end, with a failing hook between two good ones: all three run.
        for name, fail in (("good1", False), ("bad", True), ("good2", False)):
            c.execute_in_session("s3", "open_resource", {"name": name, "record": str(record), "fail": fail})
        assert c.execute_in_session("s3", "end_session").success
        assert records(record)[1:] == ["s3 good2", "s3 bad", "s3 good1", "s3 r"]  # newest first
        assert b.stop() == 0  # SIGTERM, as the pool does
    lines = records(record)
    assert sorted(lines) == sorted(["s2 r", "s3 good2", "s3 bad", "s3 good1", "s3 r", "s1 r", "s4 r"])
    assert "session close hook failed" in b.stderr_text() and "failed on purpose" in b.stderr_text()


def test_a_stream_in_flight_keeps_its_session(tmp_path):
    record = tmp_path / "hooks.txt"
    with Bridge(*ADAPTER, "--session-ttl", "0.5") as b, Client(b.target) as c:
        c.wait_ready()
        stream = c.stream("hold_stream", {"gate": "g2", "timeout": 20, "record": str(record)},
                          session_id="streamer")
        assert next(stream).data == {"started": "g2"}
        c.execute_in_session("idle", "open_resource", {"name": "r", "record": str(record)})
        wait_until(lambda: "idle r" in records(record), what="idle session to expire")
        assert "streamer r" not in records(record)
        c.execute("release", {"gate": "g2"})
        assert [ch.data for ch in stream][0] == {"released": "g2"}
        wait_until(lambda: "streamer r" in records(record), what="the streamer's session to expire after it")
        assert b.stop() == 0
    assert sorted(records(record)) == ["idle r", "streamer r"]


# -- size cap -----------------------------------------------------------------------------------


def test_memory_cap_rejects_the_store_that_would_exceed_it():
    with Bridge(*ADAPTER, "--max-session-mb", "1") as b, Client(b.target) as c:
        c.wait_ready()
        s = sid()
        assert c.execute_in_session(s, "store", {"key": "big", "value": np.zeros(100_000)}).success  # 800 KB
        size = c.execute_in_session(s, "session_info").result["size_bytes"]
        assert 800_000 <= size < 1_048_576
        r = c.execute_in_session(s, "store", {"key": "more", "value": np.zeros(50_000)})  # +400 KB
        assert not r.success and "cap" in r.error and "'more'" in r.error
        assert not c.execute_in_session(s, "retrieve", {"key": "more"}).success  # nothing half-stored
        assert c.execute_in_session(s, "session_info").result["size_bytes"] == size
        assert c.execute_in_session(s, "delete", {"key": "big"}).success
        assert c.execute_in_session(s, "store", {"key": "more", "value": np.zeros(50_000)}).success
        got = c.execute_in_session(s, "retrieve", {"key": "more"}).result["value"]
        assert isinstance(got, np.ndarray) and got.shape == (50_000,)
        # Other sessions have their own budget.
        assert c.execute_in_session(sid(), "store", {"key": "big", "value": np.zeros(100_000)}).success


# -- concurrency ----------------------------------------------------------------------------------


def test_many_sessions_many_calls_lose_no_updates(client):
    sessions = [sid() for _ in range(20)]
    calls = 50

    def bump(i: int):
        s = sessions[i % len(sessions)]
        if i % 2:  # both routes, interleaved
            return client.execute_in_session(s, "incr")
        return client.execute("incr", {"session_id": s})

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(bump, range(len(sessions) * calls)))
    assert all(r.success for r in results)
    for s in sessions:
        assert client.execute_in_session(s, "retrieve", {"key": "n"}).result["value"] == calls


def test_without_the_session_lock_updates_are_lost():
    """The control for the test above: the same load without the lock loses
    updates, so the test above would catch a missing lock."""
    with Bridge(*ADAPTER, "--no-session-lock") as b, Client(b.target) as c:
        c.wait_ready()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: c.execute_in_session("one", "incr", {"pause": 0.005}), range(200)))
        assert all(r.success for r in results)
        assert c.execute_in_session("one", "retrieve", {"key": "n"}).result["value"] < 200


def test_a_slow_call_blocks_its_own_session_only(client):
    a, b = sid(), sid()
    gate = uuid.uuid4().hex
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.execute_in_session, a, "hold", {"gate": gate, "timeout": 20})
        wait_until(lambda: client.execute("held", {"gate": gate}).result["held"], what="hold to start")
        started = time.monotonic()
        assert client.execute_in_session(b, "store", {"key": "k", "value": 1}, timeout=5).success
        assert client.execute_in_session(b, "retrieve", {"key": "k"}, timeout=5).result["value"] == 1
        assert time.monotonic() - started < 5
        with pytest.raises(grpc.RpcError) as err:  # session a is serialized behind the hold
            client.execute_in_session(a, "ping", timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not slow.done()
        client.execute("release", {"gate": gate})
        assert slow.result(10).result["released"] == gate
    assert client.execute_in_session(a, "ping", timeout=5).success  # the lock was released


def test_a_call_past_its_deadline_keeps_the_session_lock_until_its_handler_returns(client):
    """A sync handler cannot be stopped at its deadline: the session stays
    locked until it returns, so later calls wait for it and no update is lost."""
    s = sid()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        client.execute_in_session(s, "slow_incr", {"pause": 0.5}, timeout_ms=100)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.45  # the call itself did end at its deadline
    ns = [client.execute_in_session(s, "incr", timeout=5).result["n"] for _ in range(3)]
    assert ns == [2, 3, 4]  # the first waited for slow_incr's write
    time.sleep(0.2)
    assert client.execute_in_session(s, "retrieve", {"key": "n"}).result["value"] == 4


# -- stdio (pool-worker mode) ---------------------------------------------------------------------


def test_stdio_requests_with_session_id_share_sessions_with_nothing_else():
    """GenericPythonV2/Msgpack pools send ``session_id`` in args over stdio;
    the same session store serves them."""
    pytest.importorskip("snakepit_bridge.transports.stdio")
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--mode", "pool-worker", "--protocol", "json", *ADAPTER], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)

    def read_exactly(n: int) -> bytes:
        data = b""
        deadline = time.monotonic() + 10
        while len(data) < n:
            assert time.monotonic() < deadline and sel.select(timeout=max(0.0, deadline - time.monotonic())), \
                "no answer from the stdio worker"
            chunk = os.read(proc.stdout.fileno(), n - len(data))
            assert chunk, "stdio worker closed stdout"
            data += chunk
        return data

    def call(i: int, command: str, args: dict) -> dict:
        body = json.dumps({"id": i, "command": command, "args": args, "timestamp": "2026-01-01T00:00:00Z"}).encode()
        proc.stdin.write(struct.pack(">I", len(body)) + body)
        proc.stdin.flush()
        (length,) = struct.unpack(">I", read_exactly(4))
        reply = json.loads(read_exactly(length))
        assert reply["id"] == i
        return reply

    try:
        assert call(1, "ping", {"worker_id": "w1", "initialization": True})["success"]
        assert call(2, "store", {"key": "k", "value": "in s", "session_id": "stdio-s"})["success"]
        assert call(3, "store", {"key": "k", "value": "global"})["success"]
        assert call(4, "retrieve", {"key": "k", "session_id": "stdio-s"})["result"]["value"] == "in s"
        assert call(5, "retrieve", {"key": "k"})["result"]["value"] == "global"
        info = call(6, "session_info", {"session_id": "stdio-s"})["result"]
        assert info["keys"] == ["k"] and info["calls"] == 3
        missing = call(7, "retrieve", {"key": "nope", "session_id": "stdio-s"})
        assert missing["success"] is False and "'nope'" in missing["error"]
    finally:
        proc.stdin.close()  # EOF: the pool is gone
        proc.wait(10)
        sel.close()
        proc.stdout.close()
