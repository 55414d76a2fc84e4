"""``--adapter`` loads Snakepit 0.3 adapter classes unchanged, and our own paths."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from snakepit_bridge.client import Client
from tests.bridge_process import ROOT, SCRIPT


@pytest.fixture(scope="module")
def legacy(request):
    from tests.bridge_process import Bridge

    with Bridge("--adapter", "tests.legacy_adapter.LegacyHandler") as b, Client(b.target) as c:
        yield c


def test_legacy_unary_commands(legacy):
    r = legacy.execute("shout", {"text": "hi"})
    assert r.success and r.result == {"text": "HI"}
    assert legacy.execute("ping").result["message"] == "legacy pong"  # the adapter's own ping wins


def test_legacy_exception_is_a_failure(legacy):
    r = legacy.execute("legacy_fail")
    assert not r.success and r.error == "KeyError: 'missing thing'"


def test_legacy_stream_marks_its_own_final_chunk(legacy):
    chunks = list(legacy.stream("count_up", {"n": 3}))
    # Strings stay strings (JSON-quoted); 0.3 sent them raw, so Elixir saw 1, 2, 3.
    assert [c.data for c in chunks] == [{"n": "1"}, {"n": "2"}, {"n": "3"}]
    assert [c.is_final for c in chunks] == [False, False, True]


def test_legacy_per_item_error_keeps_streaming(legacy):
    chunks = list(legacy.stream("legacy_stream_error"))
    assert [c.error for c in chunks] == ["", "item 2 failed", "", ""]
    assert [c.is_final for c in chunks] == [False, False, False, True]


def test_builtins_stay_available_beside_a_legacy_adapter(legacy):
    assert legacy.execute("compute", {"operation": "add", "a": 1, "b": 1}).result["result"] == 2
    assert "count_up" in legacy.info().supported_commands


def test_plain_legacy_class_without_base(spawn_bridge):
    b = spawn_bridge("--adapter", "tests.legacy_adapter.PlainLegacyHandler")
    with Client(b.target) as c:
        assert c.execute("hello", {"name": "ex"}).result == {"greeting": "hello ex"}


def test_stock_elixir_adapter_path_serves_every_builtin(spawn_bridge):
    b = spawn_bridge("--adapter", "snakepit_bridge.adapters.grpc_streaming.GRPCStreamingHandler")
    with Client(b.target) as c:
        names = set(c.info().supported_commands)
        assert {"ping", "echo", "compute", "info", "ping_stream"} <= names
        chunks = list(c.stream("ping_stream", {"count": 2}))
        assert [ch.is_final for ch in chunks] == [False, False, True]


def test_generic_adapter_serves_the_basic_set():
    from snakepit_bridge.adapters.generic import GenericCommandHandler

    handler = GenericCommandHandler()
    assert {"ping", "echo", "compute", "info"} <= set(handler.get_supported_commands())
    assert "ping_stream" not in handler.get_supported_commands()
    assert handler.process_command("compute", {"operation": "multiply", "a": 3, "b": 4})["result"] == 12


@pytest.mark.parametrize("adapter,needle", [
    ("no_such_module.Thing", "cannot import adapter 'no_such_module.Thing'"),
    ("snakepit_bridge.adapters.generic.NoSuchClass", "cannot import adapter"),
])
def test_bad_adapter_exits_with_one_clear_message(adapter, needle):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--adapter", adapter, "--port", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert needle in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_legacy_base_has_the_03_attributes():
    from tests.legacy_adapter import StatefulLegacyHandler

    h = StatefulLegacyHandler()
    assert h.request_count == 0 and h.start_time <= time.time()
    assert set(h._command_registry) == {"stats", "safe_divide", "direct"} == set(h.get_supported_commands())
    assert h.process_command("stats", {})["requests_handled"] == 1
    unknown = h.process_command("nope", {})
    assert unknown["status"] == "error" and unknown["error"] == "Unknown command: nope"
    assert set(unknown["supported_commands"]) == {"stats", "safe_divide", "direct"} and "timestamp" in unknown
    assert h.request_count == 2


def test_legacy_03_adapter_over_the_wire(spawn_bridge):
    b = spawn_bridge("--adapter", "tests.legacy_adapter.StatefulLegacyHandler")
    with Client(b.target) as c:
        first = c.execute("stats")
        assert first.success and first.result["status"] == "ok" and first.result["uptime"] >= 0
        assert c.execute("stats").result["requests_handled"] == first.result["requests_handled"] + 1
        assert c.execute("direct").result == {"direct": True}
        assert c.execute("safe_divide", {"a": 6, "b": 3}).result["result"] == 2
        # 0.3's in-band {"status": "error", "error": ...} is a failure, not a success.
        r = c.execute("safe_divide", {"a": 1, "b": 0})
        assert not r.success and r.error == "division by zero"
