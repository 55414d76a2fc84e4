"""Fault suite: many streams at once, many calls, handlers that misbehave."""
from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest

from snakepit_bridge._proto import snakepit_pb2 as pb
from snakepit_bridge.client import Client, encode_args
from snakepit_bridge.exitcodes import ExitCode

OPS = ("--adapter", "tests.handlers_ops")


def _rss(pid: int) -> int:
    import os

    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_64_concurrent_streams_all_progress_and_health_answers(spawn_bridge):
    b = spawn_bridge(*OPS)
    n, count = 64, 20
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    totals: dict[int, int] = {}
    errors: list[BaseException] = []
    go = threading.Barrier(n + 1)

    with Client(b.target) as c:
        c.wait_ready()

        def consume(i: int) -> None:
            command = "ops_ticks" if i % 2 else "ops_ticks_sync"  # async and thread-backed generators
            try:
                go.wait()
                got = 0
                for chunk in c.stream(command, {"count": count, "interval": 0.05}, timeout=30):
                    first.setdefault(i, time.monotonic())
                    got += 1
                    assert not chunk.error, chunk.error
                last[i], totals[i] = time.monotonic(), got
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        go.wait()
        latencies = []
        while any(t.is_alive() for t in threads) and len(latencies) < 40:
            start = time.monotonic()
            assert c.health(timeout=5).healthy
            assert c.execute("ping", timeout=5).success
            latencies.append(time.monotonic() - start)
        for t in threads:
            t.join(60)

    assert not errors, errors[:3]
    assert totals == {i: count + 1 for i in range(n)}  # every chunk plus the final one
    # No starvation: every stream got its first chunk before any stream finished.
    assert max(first.values()) < min(last.values())
    # Health and ping stay responsive: typically a few ms; the bounds allow for a
    # shared, busy machine while still catching a loop blocked behind the streams.
    latencies.sort()
    assert latencies and latencies[len(latencies) // 2] < 0.5 and latencies[-1] < 2.0, latencies


def test_10000_calls_with_flat_rss(spawn_bridge):
    b = spawn_bridge()
    payload = "x" * 2048
    with Client(b.target) as c:
        c.wait_ready()
        values, encodings = encode_args({"data": payload})
        request = pb.ExecuteRequest(command="echo", args=values, arg_encodings=encodings)

        def run(calls: int, window: int = 64) -> None:
            done = 0
            while done < calls:
                futures = [c.stub.Execute.future(request, timeout=30) for _ in range(min(window, calls - done))]
                for f in futures:
                    assert f.result().success
                done += len(futures)

        run(2_000)
        after_2k = _rss(b.pid)
        run(8_000)
        after_10k = _rss(b.pid)
        assert c.info().stats.requests_handled >= 10_000
    growth_mb = (after_10k - after_2k) / 2**20
    # A leak of even one 2 KB request per call would add ~16 MB over 8,000 calls.
    assert growth_mb < 8, f"RSS grew {growth_mb:.1f} MB between 2k and 10k calls"


@pytest.mark.parametrize("command", ["ops_block_forever", "ops_swallow_cancel"])
def test_deadline_answers_despite_a_stuck_handler_and_shutdown_still_works(spawn_bridge, command):
    b = spawn_bridge(*OPS)
    with Client(b.target) as c:
        c.wait_ready()
        # timeout_ms in the request (what a Snakepit pool sends) ...
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            c.execute(command, timeout_ms=300, timeout=10)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - start < 2.0
        # ... and a gRPC deadline.
        with pytest.raises(grpc.RpcError) as info:
            c.execute(command, timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The worker keeps serving with the stuck handlers abandoned.
        assert c.execute("ping", timeout=5).success
        assert c.health(timeout=5).healthy
    start = time.monotonic()
    b.signal(signal.SIGTERM)
    assert b.wait(10) == ExitCode.OK
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("command", ["ops_stream_block", "ops_stream_swallow"])
def test_stream_deadline_ends_with_a_final_error_chunk(spawn_bridge, command):
    b = spawn_bridge(*OPS)
    with Client(b.target) as c:
        chunks = list(c.stream(command, timeout_ms=300, timeout=10))
        assert chunks[0].data == {"started": True}
        assert chunks[-1].is_final and "deadline" in chunks[-1].error
        assert c.execute("ping", timeout=5).success
    assert b.stop() == ExitCode.OK


@pytest.mark.parametrize("command", ["ops_stream_block", "ops_stream_swallow"])
def test_many_stuck_streams_do_not_starve_shutdown_of_its_close_hooks(spawn_bridge, command, tmp_path):
    marker = tmp_path / "hook-ran"
    b = spawn_bridge(*OPS)
    with Client(b.target) as c:
        assert c.execute_in_session("s1", "ops_session_hook", {"marker": str(marker)}).success
        streams = [iter(c.stream(command, timeout=20)) for _ in range(12)]
        for s in streams:
            assert next(s).data == {"started": True}
        start = time.monotonic()
        b.signal(signal.SIGTERM)
        finals = [list(s)[-1] for s in streams]
        assert b.wait(10) == ExitCode.OK
        took = time.monotonic() - start
    assert all(f.is_final and "shutting down" in f.error for f in finals)
    assert marker.read_text() == "closed"
    assert took < 2.0, f"exit took {took:.2f}s"
