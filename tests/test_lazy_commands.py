"""Built-in command families are imported on first use; every name is listed before."""
from __future__ import annotations

import subprocess
import sys

from snakepit_bridge.commands import ALL, COMMANDS, builtin_registry
from snakepit_bridge.registry import Kind, Registry


def test_the_name_table_matches_the_family_modules():
    eager = builtin_registry()
    assert eager.names() == sorted(COMMANDS)
    for family in ALL:
        assert builtin_registry((family,)).names() == sorted(n for n, f in COMMANDS.items() if f == family)


def test_a_family_is_imported_on_the_first_call_of_one_of_its_commands():
    code = (
        "import sys\n"
        "from snakepit_bridge.commands import builtin_registry\n"
        "r = builtin_registry(lazy=True)\n"
        "loaded = lambda: sorted(m for m in sys.modules if m.startswith('snakepit_bridge.commands.'))\n"
        "print(loaded(), len(r), 'ping' in r)\n"
        "assert r.find('ping').kind.value == 'inline'\n"
        "print(loaded())\n"
        "list(r)\n"
        "print(len(loaded()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == f"[] {len(COMMANDS)} True"
    assert out[1] == "['snakepit_bridge.commands.basic']"
    assert out[2] == str(len(ALL))  # iterating the registry loads every family


def test_a_registered_command_wins_over_a_deferred_builtin():
    registry = builtin_registry(("basic",), lazy=True)
    mine = Registry()
    mine.add("ping", lambda: {"mine": True})
    registry.update(mine)
    assert registry.get("echo").kind is Kind.FUNCTION  # loads the family ...
    assert registry.get("ping").invoke({}, None) == {"mine": True}  # ... which does not replace ping
    late = builtin_registry(("basic",), lazy=True)
    late.add("info", lambda: "late")
    assert late.get("info").invoke({}, None) == "late" and late.get("compute").kind is Kind.INLINE
    assert "nope" not in registry and registry.find("nope") is None


def test_a_grpc_worker_imports_a_family_on_first_use_and_lists_all(spawn_bridge):
    from snakepit_bridge.client import Client

    families = [f"snakepit_bridge.commands.{f}" for f in ALL]
    b = spawn_bridge("--adapter", "tests.handlers_ops")
    with Client(b.target) as c:
        assert c.execute("ops_modules", {"names": families}).result == {n: False for n in families}
        assert set(COMMANDS) <= set(c.info(capabilities=False, stats=False).supported_commands)
        assert c.execute("ping").success
        got = c.execute("ops_modules", {"names": families}).result
        assert got == {n: n.endswith(".basic") for n in families}
        assert "ping_stream" in c.info().capabilities["streaming_commands"]  # loads the rest to say which stream


def test_inline_fast_path_keeps_sessions_deadlines_and_errors(spawn_bridge):
    from snakepit_bridge.client import Client

    b = spawn_bridge()
    with Client(b.target) as c:
        assert c.execute("ping", {"session_id": "fast-s"}, timeout_ms=5000).success
        assert "fast-s" in str(c.execute("list_sessions").result)  # the session was made: not the fast path
        r = c.execute("compute", {"operation": "nope", "a": 1, "b": 2})
        assert not r.success and "nope" in r.error
        assert c.health().total_errors == 1 and c.health().total_requests >= 3


def test_a_stdio_worker_at_warning_imports_neither_grpc_nor_structlog_nor_unused_families():
    from tests.stdio_process import StdioBridge

    watched = ["grpc", "structlog", "numpy", *(f"snakepit_bridge.commands.{f}" for f in ALL if f != "basic")]
    with StdioBridge("--adapter", "tests.handlers_ops", "--log-level", "warning") as w:
        assert w.call("ping")["success"]
        got = w.call("ops_modules", {"names": watched})["result"]
    assert got == {name: False for name in watched}


def test_concurrent_first_lookups_load_a_family_once_and_find_every_command():
    import threading

    registry = builtin_registry(lazy=True)
    found: list[object] = []
    barrier = threading.Barrier(8)

    def look(name: str) -> None:
        barrier.wait()
        found.append(registry.find(name))

    names = ["ping", "echo", "store", "retrieve", "ping_stream", "batch_inference", "info", "compute"]
    threads = [threading.Thread(target=look, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(h is not None for h in found) and len(found) == 8
    assert registry.names() == sorted(COMMANDS) and len(list(registry)) == len(COMMANDS)
