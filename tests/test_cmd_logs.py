"""tail_and_analyze against the real bridge: matches, following, rotation,
truncation, cancellation (the file is closed), deadline, bad input."""
from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from snakepit_bridge.commands.logs import parse_timestamp, severity_of

BRIDGE_DATA_DIR = True  # the tests' files are under pytest's temp root (--data-dir)

pytestmark = pytest.mark.timeout(60)

LINES = [
    "2026-11-22 10:00:00,100 INFO service started",
    "2026-11-22 10:00:01,200 DEBUG cache warm",
    "2026-11-22T10:00:02Z ERROR disk full on /var",
    "plain line without a time",
    "Nov 22 10:00:04 host app[12]: WARN slow request 1200ms",
    "2026-11-22 10:00:05 INFO done",
    "127.0.0.1 - - [22/Nov/2026:10:00:06 +0100] \"GET / HTTP/1.1\" 500 12",
]


def append(path: Path, *lines: str) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()


def events(stream, want: int) -> list:
    """The next ``want`` chunks of a stream."""
    return [next(stream) for _ in range(want)]


def open_paths(pid: int) -> set[str]:
    return {f.path for f in psutil.Process(pid).open_files()}


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "app.log"
    path.write_text("".join(line + "\n" for line in LINES))
    return path


def test_existing_lines_with_severity_timestamp_and_context(client, log):
    args = {"log_path": str(log), "patterns": ["ERROR", "WARN", r"\" 5\d\d "], "context_lines": 1,
            "from_beginning": True, "max_matches": 3}
    chunks = list(client.stream("tail_and_analyze", args, timeout_ms=20000))
    assert chunks[0].data == {"event": "started", "log_path": str(log), "line_number": 0, "from_beginning": True}
    matches = [c.data for c in chunks if c.data.get("event") == "match"]
    assert [m["line_number"] for m in matches] == [3, 5, 7]
    assert [m["pattern_matched"] for m in matches] == ["ERROR", "WARN", r"\" 5\d\d "]
    assert [m["severity"] for m in matches] == ["ERROR", "WARNING", "UNKNOWN"]
    assert matches[0]["timestamp"] == "2026-11-22T10:00:02+00:00"
    assert matches[1]["timestamp"].endswith("-11-22T10:00:04")  # syslog: no year in the line
    assert matches[2]["timestamp"] == "2026-11-22T10:00:06+01:00"
    assert all(m["timestamp_source"] == "line" for m in matches)
    assert matches[0]["context_lines"] == {"before": [LINES[1]], "after": [LINES[3]]}
    assert matches[2]["context_lines"] == {"before": [LINES[5]], "after": []}  # end of file: sent when quiet
    final = chunks[-1]
    assert final.is_final and not final.error
    assert final.data["stopped"] == "max_matches" and final.data["matches"] == 3


def test_follows_appended_lines_only_by_default(client, log):
    with client.stream("tail_and_analyze", {"log_path": str(log), "patterns": ["ERROR"], "context_lines": 0},
                       timeout_ms=20000) as stream:
        started = next(stream).data
        assert started["event"] == "started" and started["line_number"] == len(LINES)
        append(log, "10:01 ERROR first new")
        first = next(stream).data
        append(log, "no match here", "ERROR second new")
        second = next(stream).data
    assert (first["log_line"], first["line_number"]) == ("10:01 ERROR first new", len(LINES) + 1)
    assert (second["log_line"], second["line_number"]) == ("ERROR second new", len(LINES) + 3)
    assert second["timestamp_source"] == "seen"  # no time in the line: the time it was read


def test_partial_line_is_read_once_completed(client, log):
    with open(log, "a") as f:
        f.write("ERROR half")
    with client.stream("tail_and_analyze", {"log_path": str(log), "patterns": ["ERROR"], "context_lines": 0},
                       timeout_ms=20000) as stream:
        assert next(stream).data["event"] == "started"
        with open(log, "a") as f:
            f.write(" and the rest\n")
        match = next(stream).data
    assert match["log_line"] == "ERROR half and the rest"


def test_survives_rename_and_recreate(client, log):
    with client.stream("tail_and_analyze", {"log_path": str(log), "patterns": ["ERROR"], "context_lines": 0,
                                            "poll_interval": 0.02}, timeout_ms=20000) as stream:
        assert next(stream).data["event"] == "started"
        append(log, "ERROR before rotation")
        assert next(stream).data["log_line"] == "ERROR before rotation"
        append(log, "ERROR written just before the rename")
        os.rename(log, log.with_suffix(".log.1"))
        append(log, "fresh file INFO", "ERROR after rotation")
        got = events(stream, 3)
    assert got[0].data["log_line"] == "ERROR written just before the rename"
    assert got[1].data["event"] == "rotated"
    assert (got[2].data["log_line"], got[2].data["line_number"]) == ("ERROR after rotation", 2)


def test_survives_truncation(client, log):
    with client.stream("tail_and_analyze", {"log_path": str(log), "patterns": ["CRITICAL"], "context_lines": 0,
                                            "poll_interval": 0.02}, timeout_ms=20000) as stream:
        assert next(stream).data["event"] == "started"
        with open(log, "w"):
            pass  # truncate in place (copytruncate)
        truncated = next(stream).data
        append(log, "CRITICAL after truncation")
        match = next(stream).data
    assert truncated["event"] == "truncated"
    assert (match["log_line"], match["line_number"], match["severity"]) == ("CRITICAL after truncation", 1, "CRITICAL")


def test_cancel_closes_the_file_and_worker_keeps_serving(bridge, client, log):
    stream = client.stream("tail_and_analyze", {"log_path": str(log), "patterns": ["ERROR"]}, timeout_ms=30000)
    assert next(stream).data["event"] == "started"
    assert str(log) in open_paths(bridge.pid)  # the check below can fail
    stream.cancel()
    assert wait_for(lambda: str(log) not in open_paths(bridge.pid)), "log file still open after cancel"
    assert client.execute("ping").success


def test_deadline_ends_the_stream(client, log):
    t0 = time.monotonic()
    chunks = list(client.stream("tail_and_analyze", {"log_path": str(log), "patterns": ["ERROR"]}, timeout_ms=600))
    assert time.monotonic() - t0 < 10
    final = chunks[-1]
    assert final.is_final
    # Ended by the handler itself (just before the deadline) or cut off by the core.
    assert final.data.get("stopped") == "deadline" or "deadline" in final.error.lower()


@pytest.mark.parametrize("args, needle", [
    ({"patterns": ["(unclosed"]}, "invalid regex '(unclosed'"),
    ({"patterns": []}, "'patterns' must be a non-empty list"),
    ({"context_lines": -1}, "'context_lines': Expected `int` >= 0, got -1"),
    ({"max_matches": 0}, "'max_matches': Expected `int` >= 1, got 0"),
])
def test_bad_arguments(client, log, args, needle):
    chunks = list(client.stream("tail_and_analyze", {"log_path": str(log), **args}, timeout_ms=10000))
    assert len(chunks) == 1 and chunks[0].is_final
    assert needle in chunks[0].error


def test_missing_file(client, tmp_path):
    chunks = list(client.stream("tail_and_analyze", {"log_path": str(tmp_path / "nope.log")}, timeout_ms=10000))
    assert "no such file" in chunks[-1].error and chunks[-1].is_final
    assert client.execute("ping").success


def test_timestamp_and_severity_parsing():
    assert parse_timestamp("2026-01-02 03:04:05.123456789 x") == "2026-01-02T03:04:05.123456"
    assert parse_timestamp("at 2026-01-02T03:04:05+05:30") == "2026-01-02T03:04:05+05:30"
    assert parse_timestamp("2026-13-45 03:04:05 bogus date") is None
    assert parse_timestamp("nothing here") is None
    assert severity_of("x FATAL y", "y", None) == "CRITICAL"
    assert severity_of("no level", "(?i)warn", None) == "WARNING"
    assert severity_of("an ERROR line", "x", "notice") == "notice"
    assert severity_of("errors are lowercase words", "x", None) == "UNKNOWN"
