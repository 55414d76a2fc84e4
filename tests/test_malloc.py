"""Large blocks stay in the heap once a worker meets a large message
(snakepit_bridge._malloc; docs/operations.md, "Health under load")."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from snakepit_bridge import _malloc
from snakepit_bridge.dispatch import OFFLOAD_BYTES, Dispatcher, Request
from snakepit_bridge.registry import Registry

# Faults taken by 20 copies of a 10 MB value, after the settings (or not).
_FAULTS = """
import resource, sys
from snakepit_bridge import _malloc
applied = [_malloc.keep_large_blocks(), _malloc.keep_large_blocks()] if sys.argv[1] == "keep" else []
value = bytes(10 * 1024 * 1024)
bytes(bytearray(value))  # the first copy may grow the heap
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    copy = bytes(bytearray(value))
    del copy
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True).stdout
    applied, faults = out.rsplit(" ", 1)
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_large_copies_reuse_memory_once_kept() -> None:
    applied, kept = _faults("keep")
    assert applied == "[True, False]"  # applied once; the second call does nothing
    _, default = _faults("default")
    # 40 blocks of 10 MB: ~100,000 page faults in fresh mappings; reused memory takes almost none.
    assert default > 50_000
    assert kept < default // 20


def test_dispatch_applies_them_at_the_first_large_request(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(_malloc, "done", False)
    monkeypatch.setattr(_malloc, "keep_large_blocks", lambda: calls.append(1) or setattr(_malloc, "done", True))
    reg = Registry()
    reg.command("size")(lambda args: {"n": len(args["v"])})
    d = Dispatcher(reg)

    async def call(size: int) -> None:
        req = Request("size", {}, decode=lambda hints=None: {"v": "x" * size}, decode_size=size)
        assert (await d.call(req)).success

    async def main() -> None:
        await call(1000)
        assert calls == []  # small requests leave malloc alone
        await call(OFFLOAD_BYTES + 1)
        await call(OFFLOAD_BYTES + 1)
        assert calls == [1]
        await d.aclose()

    asyncio.run(main())


def _rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_worker_gives_the_kept_memory_back_once_large_messages_stop():
    """After a burst of 4 MB echoes (4 callers at once), what the heaps kept
    goes back to the kernel within IDLE_SECONDS and a little."""
    import threading

    from snakepit_bridge.client import Client
    from tests.bridge_process import Bridge
    from tests.handlers_ops import wait_until

    with Bridge() as b, Client(b.target, elixir_style=True) as c:
        c.execute("ping")
        data = [i * 0.5 for i in range(500_000)]

        def echo() -> None:
            for _ in range(2):
                c.execute("echo", {"data": data})

        for _ in range(2):
            callers = [threading.Thread(target=echo) for _ in range(4)]
            for t in callers:
                t.start()
            for t in callers:
                t.join()
        burst = _rss_mb(b.proc.pid)
        assert burst > 120, burst  # the heaps hold the burst's copies
        assert wait_until(lambda: _rss_mb(b.proc.pid) < burst - 60, timeout=_malloc.IDLE_SECONDS + 5), \
            (burst, _rss_mb(b.proc.pid))


def test_malloc_keep_mb_sets_what_the_heaps_keep_and_zero_leaves_glibc_alone(monkeypatch):
    from snakepit_bridge.cli import parse_config
    from snakepit_bridge.config import ConfigError

    assert parse_config([]).malloc_keep_bytes == _malloc.KEEP_FREE_BYTES
    assert parse_config(["--malloc-keep-mb", "64"]).malloc_keep_bytes == 64 << 20
    with pytest.raises(ConfigError, match="--malloc-keep-mb"):
        parse_config(["--malloc-keep-mb", "-1"])
    monkeypatch.setattr(_malloc, "done", False)
    monkeypatch.setattr(_malloc, "_libc", None)
    monkeypatch.setattr(_malloc, "_keep", _malloc.KEEP_FREE_BYTES)
    _malloc.configure(0)
    assert _malloc.keep_large_blocks() is False  # nothing applied
    _malloc.large_message()
    assert _malloc._libc is None and _malloc._timer is None
