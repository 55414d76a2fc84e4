"""Caller-named files and user patterns under attack, against the real process
(issue 14, second audit): rename races against the data-dir confinement, a
FIFO swapped in under batch_inference's model, a file without newlines, chunk
memory, and RE2 programs whose size makes every line slow.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from snakepit_bridge.client import Client
from tests.bridge_process import Bridge

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses renameat2 and /proc")

# Swaps two names atomically (renameat2 RENAME_EXCHANGE) in a loop until killed.
SWAPPER = textwrap.dedent("""
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    a, b = sys.argv[1].encode(), sys.argv[2].encode()
    print("go", flush=True)
    while True:
        libc.renameat2(-100, a, -100, b, 2)
""")


def _swapper(a, b) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SWAPPER, str(a), str(b)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"go\n"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(5)


def _last(client: Client, command: str, args: dict, timeout_ms: int = 5000):
    chunks = list(client.stream(command, args, timeout_ms=timeout_ms))
    assert chunks and chunks[-1].is_final, chunks
    return chunks


@linux
@pytest.mark.slow
def test_a_directory_swapped_for_a_symlink_never_lets_a_read_escape(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("LEAKED ERROR\n")
    data = tmp_path / "data"
    (data / "race").mkdir(parents=True)
    (data / "race" / "secret.txt").write_text("benign ERROR\n")
    (data / "racelink").symlink_to(outside)
    seen: dict[str, int] = {}
    with Bridge("--data-dir", str(data)) as b, Client(b.target) as c:
        swapper = _swapper(data / "race", data / "racelink")
        try:
            until = time.monotonic() + 3.0
            while time.monotonic() < until:
                chunks = _last(c, "tail_and_analyze", {"log_path": str(data / "race" / "secret.txt"),
                                                       "from_beginning": True, "patterns": ["ERROR"],
                                                       "max_matches": 1})
                text = repr([(ch.error, ch.data) for ch in chunks])
                assert "LEAKED" not in text, text
                assert "[Errno" not in text, text
                key = "read" if "benign" in text else (chunks[-1].error or "?")[:60]
                seen[key] = seen.get(key, 0) + 1
        finally:
            _stop(swapper)
        assert seen.get("read", 0) > 0, seen  # the path inside still works between swaps
        assert c.health(timeout=5).healthy


def test_a_symlink_below_the_data_dir_is_not_followed_at_open_time(tmp_path):
    # The path resolves inside; the walk opens the resolved path, never a symlink.
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "real" / "a.log").write_text("ERROR here\n")
    (data / "alias").symlink_to(data / "real")
    with Bridge("--data-dir", str(data)) as b, Client(b.target) as c:
        chunks = _last(c, "tail_and_analyze", {"log_path": str(data / "alias" / "a.log"), "from_beginning": True,
                                               "max_matches": 1})
        assert [ch.data["log_line"] for ch in chunks if ch.data.get("event") == "match"] == ["ERROR here"]


def _blocked_threads(pid: int) -> list[str]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/wchan") as f:
                wchan = f.read()
        except OSError:
            continue
        if "fifo" in wchan or "pipe" in wchan or "wait_for_partner" in wchan:
            out.append(wchan)
    return out


@linux
@pytest.mark.slow
def test_a_model_file_swapped_for_a_fifo_never_blocks_a_thread(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "m.npz").write_bytes(b"PK\x03\x04notreallyazip")
    os.mkfifo(data / "mfifo")
    errors: dict[str, int] = {}
    with Bridge("--data-dir", str(data), "--max-workers", "4") as b, Client(b.target) as c:
        baseline = sorted(_blocked_threads(b.pid))  # the worker's own pipes (stdin watcher)
        swapper = _swapper(data / "m.npz", data / "mfifo")
        try:
            until = time.monotonic() + 2.0
            while time.monotonic() < until:
                chunks = _last(c, "batch_inference", {"batch_items": ["x"], "model_path": str(data / "m.npz")},
                               timeout_ms=2000)
                error = chunks[-1].error
                assert error and "[Errno" not in error, error
                kind = next((k for k in ("not a .npz", "not a regular file", "changed while") if k in error), error)
                errors[kind] = errors.get(kind, 0) + 1
        finally:
            _stop(swapper)
        assert sorted(_blocked_threads(b.pid)) == baseline
        assert set(errors) <= {"not a .npz", "not a regular file", "changed while"} and "not a .npz" in errors, errors
        # The shipped model still needs no data dir.
        r = list(c.stream("batch_inference", {"batch_items": ["I love it"]}, timeout_ms=10000))
        assert r[0].data["prediction"] == "positive"


def test_a_file_without_newlines_is_refused_at_the_line_bound(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    huge = data / "huge"
    with open(huge, "wb") as f:
        f.truncate(4 << 30)  # 4 GiB of NULs, sparse: no newline anywhere
    with Bridge("--data-dir", str(data)) as b, Client(b.target) as c:
        before = psutil.Process(b.pid).memory_info().rss
        for count_rows in (False, True):
            started = time.monotonic()
            chunks = _last(c, "process_large_dataset", {"file_path": str(huge), "count_rows": count_rows},
                           timeout_ms=10000)
            assert "longer than 1048576 characters" in chunks[-1].error, chunks[-1].error
            assert time.monotonic() - started < 3.0
        assert psutil.Process(b.pid).memory_info().rss - before < 100 << 20
        # A long line that is still under the bound is an ordinary row.
        ok = data / "ok.csv"
        ok.write_text("a,b\n" + "1," + "x" * 100_000 + "\n2,y\n")
        chunks = _last(c, "process_large_dataset", {"file_path": str(ok)})
        assert not chunks[-1].error and chunks[-1].data["final_stats"]["rows_read"] == 2


def test_a_chunk_is_cut_at_its_byte_budget_whatever_chunk_size(client):
    sizes = []
    for chunk in client.stream("process_large_dataset", {"total_rows": 100_000, "chunk_size": 1_000_000,
                                                         "include_rows": True}, timeout_ms=60000):
        if chunk.is_final:
            assert not chunk.error and chunk.data["processed_rows"] == 100_000
        else:
            sizes.append(chunk.data["rows_in_chunk"])
            assert len(chunk.data["rows"]) == chunk.data["rows_in_chunk"]
    assert sum(sizes) == 100_000 and len(sizes) > 1 and max(sizes) < 100_000


def test_a_pattern_with_a_large_program_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.log").write_text("x\n")
    with Bridge("--data-dir", str(data)) as b, Client(b.target) as c:
        for patterns in (["a[ab]{999}c"], ["x" * 1200], ["a[ab]{900}" + chr(99 + i) for i in range(20)]):
            chunks = _last(c, "tail_and_analyze", {"log_path": str(data / "a.log"), "patterns": patterns})
            assert "RE2 instructions, more than" in chunks[-1].error, chunks[-1].error


@linux
@pytest.mark.slow
def test_expensive_patterns_stop_at_the_deadline_and_burn_nothing_after(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(1)
    log = data / "ab.log"
    ab = bytes(b"ab"[i % 2] for i in range(256))
    with open(log, "wb") as f:
        for _ in range(64):
            f.write(rng.randbytes(1 << 16).translate(ab) + b"\n")
    patterns = ["a[ab]{900}" + chr(99 + i) for i in range(16)]  # each under the program bound
    with Bridge("--data-dir", str(data)) as b, Client(b.target) as c:
        proc = psutil.Process(b.pid)
        started = time.monotonic()
        chunks = list(c.stream("tail_and_analyze", {"log_path": str(log), "from_beginning": True,
                                                    "patterns": patterns}, timeout_ms=1500))
        assert chunks[-1].is_final and chunks[-1].data.get("stopped") == "deadline", chunks[-1]
        assert time.monotonic() - started < 3.0
        cpu = sum(proc.cpu_times()[:2])
        time.sleep(1.0)  # measuring idle CPU over a window, not waiting for readiness
        assert sum(proc.cpu_times()[:2]) - cpu < 0.3


@linux
@pytest.mark.slow
def test_long_lines_stop_at_the_deadline_in_the_counting_pass_too(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sparse = data / "sparse.csv"
    with open(sparse, "wb") as f:  # 4 GiB, sparse: 512 KiB lines of NULs (under the line bound)
        for k in range(1, 8193):
            f.seek(k * (512 << 10) - 1)
            f.write(b"\n")
    with Bridge("--data-dir", str(data)) as b, Client(b.target) as c:
        proc = psutil.Process(b.pid)
        for count_rows in (True, False):
            started = time.monotonic()
            chunks = list(c.stream("process_large_dataset", {"file_path": str(sparse), "count_rows": count_rows},
                                   timeout_ms=1000))
            assert chunks[-1].is_final and "deadline" in chunks[-1].error, chunks[-1]
            assert time.monotonic() - started < 3.0
            cpu = sum(proc.cpu_times()[:2])
            time.sleep(0.5)  # measuring idle CPU over a window, not waiting for readiness
            assert sum(proc.cpu_times()[:2]) - cpu < 0.2, count_rows
