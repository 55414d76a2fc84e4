"""The stand-in logger: structlog imported on first use, info lines rendered directly, identical to structlog's."""
from __future__ import annotations

import subprocess
import sys

import pytest


class _Written:
    """The sink's output: what it writes, as lines."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        lines, self.text = self.text.splitlines(), ""
        return lines


@pytest.fixture
def written(monkeypatch):
    """The sink writes into a :class:`_Written`; logging is set back to info/console after."""
    from snakepit_bridge import logging as bl

    out = _Written()
    bl._sink.flush()
    monkeypatch.setattr(bl._sink, "_out", out)
    yield out
    bl.configure("info", "console")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_direct_info_lines_equal_structlogs(fmt, monkeypatch):
    from snakepit_bridge import logging as bl

    out = _Written()
    bl._sink.flush()
    monkeypatch.setattr(bl, "iso_utc", lambda *_: "2026-12-02T00:00:00.000000Z")
    monkeypatch.setattr(bl._sink, "_out", out)
    try:
        bl.configure("info", fmt)
        log = bl.get_logger("t", worker="w1")
        real = bl._real_logger("t", {"worker": "w1"})
        for event, kw in [("call", {"request_id": "7", "command": "ping", "duration_ms": 0.1, "outcome": "ok"}),
                          ("call", {"request_id": 7, "command": "it's", "duration_ms": 12.0, "outcome": None}),
                          ("odd", {"s": "has space", "n": None, "l": [1, "x"]}), ("bare", {}),
                          ("an event name longer than thirty characters", {"b": True, "empty": "", "eq": "a=b"})]:
            for level in ("info", "warning", "error"):
                getattr(log, level)(event, **kw)
                getattr(real, level)(event, **kw)
                bl._sink.flush()
                lines = out.lines()
                assert len(lines) == 2 and lines[0] == lines[1], lines
        log.debug("dropped at info")
        bl._sink.flush()
        assert out.lines() == []
        assert log.info.__name__ == log.warning.__name__ == "emit"  # the direct path was the one taken
    finally:
        bl.configure("info", "console")


def test_plain_info_lines_are_held_unrendered_and_rendered_in_order(written):
    from snakepit_bridge import logging as bl

    bl.configure("info", "console")
    log = bl.get_logger("t")
    log.info("first", n=1)
    assert isinstance(bl._sink._held[-1], tuple)  # held as its fields, not rendered yet
    log.info("second", l=[1])  # not plain: rendered through structlog now
    log.warning("third")  # written at once, after what is held
    assert [line.split()[3] for line in written.lines()] == ["first", "second", "third"]


def test_a_held_line_counts_the_strings_it_holds(written):
    """A caller's long value (a request id of megabytes, say) is not held for
    another 0.1 s as if it were a short line: HOLD_CHARS counts it."""
    from snakepit_bridge import logging as bl

    bl.configure("info", "console")
    log = bl.get_logger("t")
    log.info("small", request_id="r1")
    assert written.lines() == []  # held
    log.info("call", request_id="x" * bl.HOLD_CHARS)
    assert [line.split()[3] for line in written.lines()] == ["small", "call"]  # written at once, in order


def test_reconfiguring_applies_to_loggers_already_handed_out(written):
    from snakepit_bridge import logging as bl

    bl.configure("info", "console")
    log = bl.get_logger("t")
    log.debug("not at info")
    bl.configure("debug", "console")
    log.debug("now at debug")
    bl._sink.flush()
    lines = written.lines()
    assert len(lines) == 1 and "now at debug" in lines[0]


def test_structlog_is_not_imported_until_a_line_needs_it():
    code = ("import sys\n"
            "from snakepit_bridge import logging as bl\n"
            "bl.configure('warning', 'console')\n"
            "log = bl.get_logger('x')\n"
            "log.info('filtered')\n"
            "print('structlog' in sys.modules)\n"
            "log.warning('shown', n=1)\n"
            "print('structlog' in sys.modules)\n"
            "log.warning('needs structlog', l=[1])\n"
            "print('structlog' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False", "False", "True"]
    assert "shown" in run.stderr and "needs structlog" in run.stderr and "filtered" not in run.stderr


def test_a_held_line_that_cannot_be_rendered_says_so_and_the_rest_are_written(written):
    from snakepit_bridge import logging as bl

    bl.configure("info", "console")
    log = bl.get_logger("t")
    log.info("huge", n=10**5000)  # repr() refuses ints past Python's digit limit
    log.info("after", n=1)
    bl._sink.flush()
    lines = written.lines()
    assert len(lines) == 2 and "huge (line not rendered: ValueError" in lines[0] and lines[1].endswith("n=1")
