"""Ports: never two processes on one port. A taken --port binds another free
port (default, reported in the ready line, with a warning); --strict-port exits
with ExitCode.PORT_IN_USE."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from snakepit_bridge.client import Client
from snakepit_bridge.exitcodes import ExitCode
from tests.bridge_process import ROOT, SCRIPT
from tests.handlers_ops import wait_until


@pytest.fixture
def taken_port():
    """A port held by a plain listening socket (no SO_REUSEPORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_second_bridge_on_the_same_port_gets_another(spawn_bridge):
    """With gRPC's default SO_REUSEPORT both would bind the port and split its
    traffic; with it off the second reports a different port."""
    first = spawn_bridge()
    second = spawn_bridge("--port", str(first.port))
    assert second.port != first.port
    assert second.stdout_lines == [f"GRPC_SERVER_READY_ON_PORT={second.port}"]
    assert wait_until(lambda: "requested port in use" in second.stderr_text(), 5) is not None
    # Each port leads to its own process.
    with Client(first.target) as a, Client(second.target) as b:
        pids = {a.info().system_info.get("pid"), b.info().system_info.get("pid")}
    assert pids == {str(first.pid), str(second.pid)}


def test_busy_port_binds_another_and_warns(spawn_bridge, taken_port):
    b = spawn_bridge("--port", str(taken_port))
    assert b.port not in (0, taken_port)
    assert wait_until(lambda: f"requested={taken_port}" in b.stderr_text(), 5) is not None
    with Client(b.target) as c:
        assert c.execute("ping").success
    assert b.stop() == 0
    assert "Failed to add port" not in b.stderr_text()  # the probe spared us gRPC's error line


def test_strict_port_exits_with_a_clear_message(taken_port):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--port", str(taken_port), "--strict-port"],
                          cwd=ROOT, stdin=subprocess.PIPE, capture_output=True, timeout=15)
    assert proc.returncode == ExitCode.PORT_IN_USE
    assert proc.stdout == b""  # no ready line
    assert f"127.0.0.1:{taken_port}" in proc.stderr.decode() and "in use" in proc.stderr.decode()


def test_strict_port_binds_a_free_port(spawn_bridge):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = spawn_bridge("--port", str(port), "--strict-port")
    assert b.port == port
