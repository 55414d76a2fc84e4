"""Shared fixtures: a real bridge process and a client to it."""
from __future__ import annotations

import pytest

from snakepit_bridge.client import Client
from tests.bridge_process import Bridge


@pytest.fixture(scope="module")
def bridge(request):
    """One real bridge shared by a test module, started with the module's
    ``BRIDGE_ARGS`` (a tuple of flags, e.g. an ``--adapter``) if it has one."""
    with Bridge(*getattr(request.module, "BRIDGE_ARGS", ())) as b:
        yield b


@pytest.fixture(scope="module")
def client(bridge):
    with Client(bridge.target) as c:
        c.wait_ready()
        yield c


@pytest.fixture
def spawn_bridge():
    """Factory for bridges with custom flags, stopped at the end of the test."""
    started: list[Bridge] = []

    def spawn(*args: str, **kwargs) -> Bridge:
        b = Bridge(*args, **kwargs)
        started.append(b)
        return b

    yield spawn
    for b in started:
        b.__exit__(None, None, None)
