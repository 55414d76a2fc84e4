"""snakepit_bridge._lazy: a module bound with lazy_module loads on first use, once, also when threads race."""
from __future__ import annotations

import importlib
import sys
import threading
import types

from snakepit_bridge._lazy import lazy_module


def test_loads_on_first_use_once_while_threads_race(tmp_path, monkeypatch):
    # A module whose import takes a while: a thread that touches it mid-load
    # must wait for the load, not see a half-made module (Python 3.11's
    # LazyLoader lets it through and it gets AttributeError).
    (tmp_path / "snakepit_slow_mod.py").write_text(
        "import time\nLOADS = getattr(__import__('builtins'), 'snakepit_slow_loads', 0) + 1\n"
        "__import__('builtins').snakepit_slow_loads = LOADS\ntime.sleep(0.2)\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "snakepit_slow_mod", raising=False)
    module = lazy_module("snakepit_slow_mod")
    assert type(module) is not types.ModuleType  # nothing ran yet
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(getattr(module, "VALUE", "missing"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert got == [42] * 4
    assert module.LOADS == 1
    assert type(module) is types.ModuleType  # an ordinary module from now on
    assert importlib.import_module("snakepit_slow_mod") is module  # an import gets the same object
    monkeypatch.delitem(sys.modules, "snakepit_slow_mod")


def test_a_loaded_module_is_returned_as_it_is():
    assert lazy_module("os") is sys.modules["os"]
