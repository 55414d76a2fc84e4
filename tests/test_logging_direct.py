"""The stand-in logger: structlog imported on first use, info lines rendered directly, identical to structlog's."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_direct_info_lines_equal_structlogs(fmt, monkeypatch):
    from snakepit_bridge import logging as bl

    lines: list[str] = []
    monkeypatch.setattr(bl, "iso_utc", lambda: "2026-12-02T00:00:00.000000Z")
    monkeypatch.setattr(bl._sink, "hold", lines.append)
    monkeypatch.setattr(bl._sink, "now", lines.append)
    monkeypatch.setattr(bl._sink, "info", lines.append)
    try:
        bl.configure("info", fmt)
        log = bl.get_logger("t", worker="w1")
        real = bl._real_logger("t", {"worker": "w1"})
        for event, kw in [("call", {"request_id": "7", "command": "ping", "duration_ms": 0.1, "outcome": "ok"}),
                          ("odd", {"s": "has space", "n": None, "l": [1, "x"]}), ("bare", {})]:
            log.info(event, **kw)
            real.info(event, **kw)
            assert len(lines) == 2 and lines[0] == lines[1], lines
            lines.clear()
        log.debug("dropped at info")
        assert lines == []
        assert log.info.__name__ == "emit"  # the direct path was the one taken
    finally:
        bl.configure("info", "console")


def test_reconfiguring_applies_to_loggers_already_handed_out(monkeypatch):
    from snakepit_bridge import logging as bl

    lines: list[str] = []
    monkeypatch.setattr(bl._sink, "hold", lines.append)
    try:
        bl.configure("info", "console")
        log = bl.get_logger("t")
        log.debug("not at info")
        bl.configure("debug", "console")
        log.debug("now at debug")
        assert len(lines) == 1 and "now at debug" in lines[0]
    finally:
        bl.configure("info", "console")


def test_structlog_is_not_imported_until_a_line_is_logged():
    code = ("import sys\n"
            "from snakepit_bridge import logging as bl\n"
            "bl.configure('warning', 'console')\n"
            "log = bl.get_logger('x')\n"
            "log.info('filtered')\n"
            "print('structlog' in sys.modules)\n"
            "log.warning('shown', n=1)\n"
            "print('structlog' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False", "True"]
    assert "shown" in run.stderr and "filtered" not in run.stderr
