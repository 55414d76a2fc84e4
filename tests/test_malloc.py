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
