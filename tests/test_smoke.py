"""The bridge starts, announces its port and answers the basics."""
from __future__ import annotations


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
