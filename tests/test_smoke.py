"""The bridge starts, announces its port and answers the basics."""
from __future__ import annotations

import time

import pytest

from snakepit_bridge.commands.basic import compute
from snakepit_bridge.errors import InvalidArgument


def test_ready_line_is_the_only_stdout(bridge):
    assert bridge.stdout_lines == [f"GRPC_SERVER_READY_ON_PORT={bridge.port}"]


def test_ping(client):
    r = client.execute("ping")
    assert r.success and r.result["message"] == "pong"


def test_stream_ends_with_one_final(client):
    chunks = list(client.stream("ping_stream", {"count": 3}))
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert [c.is_final for c in chunks] == [False, False, False, True]


def test_python_dash_m_runs_the_same_worker():
    from snakepit_bridge.client import Client
    from snakepit_bridge.testing import Bridge as PackageBridge
    from tests.bridge_process import ROOT

    with PackageBridge(cwd=ROOT) as b, Client(b.target) as c:
        assert b.stdout_lines == [f"GRPC_SERVER_READY_ON_PORT={b.port}"]
        assert c.execute("ping").success


def test_huge_power_is_refused_at_once(client):
    # 10**30000000 would block the event loop for most of a minute and then
    # fail to encode; it must be refused up front with a clear message.
    started = time.monotonic()
    r = client.execute("compute", {"operation": "power", "a": 10, "b": 30_000_000})
    assert time.monotonic() - started < 2
    assert not r.success and "too large" in r.error
    assert client.execute("ping").success


def test_compute_power_limits():
    # compute declares keyword-only parameters: called directly, it takes them as keywords.
    # The largest power that still encodes (4,300 digits) is allowed.
    assert len(str(compute(**{"operation": "power", "a": 10, "b": 4299})["result"])) == 4300
    assert compute(**{"operation": "power", "a": 2, "b": -2})["result"] == 0.25
    with pytest.raises(InvalidArgument, match="too large"):
        compute(**{"operation": "power", "a": -10, "b": 4300})
    # Float overflow, raised (pow) or silent (inf from multiply), is a clear error.
    for op, a, b in [("power", 10.0, 400), ("multiply", 1e308, 10)]:
        with pytest.raises(InvalidArgument, match="too large for a float"):
            compute(**{"operation": op, "a": a, "b": b})
