"""ping_stream against the real bridge: count, interval, cancellation during the
interval, deadline, bad input."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(60)


def active_streams(client) -> int:
    return client.info(capabilities=False).stats.active_streams


def test_count_chunks_then_final(client):
    chunks = list(client.stream("ping_stream", {"count": 5}, timeout_ms=10000))
    assert [c.data.get("ping_number") for c in chunks[:-1]] == [1, 2, 3, 4, 5]
    assert all(c.data["count"] == 5 and c.data["message"] == f"Ping {i + 1} of 5" for i, c in enumerate(chunks[:-1]))
    assert chunks[-1].is_final and not chunks[-1].error and [c.is_final for c in chunks].count(True) == 1


def test_zero_count_is_just_the_final_chunk(client):
    chunks = list(client.stream("ping_stream", {"count": 0}, timeout_ms=10000))
    assert len(chunks) == 1 and chunks[0].is_final and not chunks[0].error


def test_interval_is_honoured_between_chunks(client):
    arrivals = []
    for _ in client.stream("ping_stream", {"count": 4, "interval": 0.2}, timeout_ms=20000):
        arrivals.append(time.monotonic())
    assert len(arrivals) == 5  # 4 pings and the final chunk
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:4], strict=False)]
    assert all(g >= 0.15 for g in gaps), gaps  # a lower bound only: the machine is shared


def test_server_timestamps_are_interval_apart(client):
    chunks = list(client.stream("ping_stream", {"count": 3, "interval": 0.1}, timeout_ms=20000))
    stamps = [c.data["timestamp"] for c in chunks[:-1]]
    assert all(b - a >= 0.095 for a, b in zip(stamps, stamps[1:], strict=False)), stamps


def test_cancel_during_the_interval_stops_the_stream(client):
    assert active_streams(client) == 0
    stream = client.stream("ping_stream", {"count": 3, "interval": 60}, timeout_ms=120000)
    assert next(stream).data["ping_number"] == 1
    assert active_streams(client) == 1  # sleeping in its 60 s interval
    t0 = time.monotonic()
    stream.cancel()
    while active_streams(client) and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert active_streams(client) == 0, "stream still running after cancel"
    assert client.execute("ping").success


def test_deadline_cuts_a_long_interval(client):
    t0 = time.monotonic()
    chunks = list(client.stream("ping_stream", {"count": 2, "interval": 60}, timeout_ms=300))
    assert time.monotonic() - t0 < 10
    assert chunks[0].data["ping_number"] == 1
    assert chunks[-1].is_final and "deadline" in chunks[-1].error.lower()


@pytest.mark.parametrize("args, needle", [
    ({"count": -1}, "'count': Expected `int` >= 0, got -1"),
    ({"count": "3"}, "'count': Expected `int`, got `str`"),
    ({"count": 2**31}, "'count': Expected `int` <= 2147483646, got 2147483648"),
    ({"count": 1, "interval": -0.5}, "'interval': Expected `float` >= 0.0, got -0.5"),
])
def test_bad_arguments(client, args, needle):
    chunks = list(client.stream("ping_stream", args, timeout_ms=10000))
    assert len(chunks) == 1 and needle in chunks[0].error
