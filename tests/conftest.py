"""Shared fixtures: a real bridge process and a client to it."""
from __future__ import annotations

import pytest

from snakepit_bridge.client import Client
from tests.bridge_process import Bridge


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """pytest's base temporary directory: every ``tmp_path`` is below it, so a
    bridge started with ``--data-dir`` this may read the tests' files."""
    return str(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def bridge(request, data_dir):
    """One real bridge shared by a test module, started with the module's
    ``BRIDGE_ARGS`` (a tuple of flags, e.g. an ``--adapter``) if it has one,
    and ``--data-dir`` the test temp root when the module sets ``BRIDGE_DATA_DIR``."""
    args = list(getattr(request.module, "BRIDGE_ARGS", ()))
    if getattr(request.module, "BRIDGE_DATA_DIR", False):
        args += ["--data-dir", data_dir]
    with Bridge(*args) as b:
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
