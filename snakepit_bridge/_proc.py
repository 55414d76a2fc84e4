"""Process figures and the process tree, from /proc (Linux) with portable fallbacks."""
from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import time
from typing import NoReturn

__all__ = ["CpuMeter", "descendants", "flush_and_exit", "kill_descendants", "read_regular_file", "rss_bytes",
           "set_parent_death_signal", "take_stdout", "terminate_descendants"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


#: A key, certificate, CA bundle or token file larger than this is refused.
MAX_CONFIG_FILE = 16 * 1024 * 1024


def read_regular_file(path: str, flag: str) -> bytes:
    """The bytes of a start-up file (``flag`` names it in errors). Opened
    non-blocking and refused unless it is a regular file: a FIFO would hang
    start-up, a device would never end. Raises OSError with a clear message."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise OSError(f"cannot read {flag} {path!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{flag} {path!r} is not a regular file (a FIFO or device would block start-up)")
        if st.st_size > MAX_CONFIG_FILE:
            raise OSError(f"{flag} {path!r} is larger than {MAX_CONFIG_FILE} bytes")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_CONFIG_FILE + 1)
    finally:
        os.close(fd)


def rss_bytes() -> int:
    """Resident set size of this process now."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class CpuMeter:
    """CPU use of this process in percent of one core since the previous reading."""

    def __init__(self) -> None:
        self._cpu = self._cpu_seconds()
        self._wall = time.monotonic()

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def percent(self) -> float:
        cpu, wall = self._cpu_seconds(), time.monotonic()
        used, elapsed = cpu - self._cpu, wall - self._wall
        self._cpu, self._wall = cpu, wall
        return round(100.0 * used / elapsed, 2) if elapsed > 0 else 0.0


# -- the process tree (orphans) -------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies
    (prctl PR_SET_PDEATHSIG). False where that is not available.

    Linux sends it when the parent *thread* that forked us exits, not only the
    parent process, so whoever handles ``sig`` must check :func:`os.getppid`
    against the original parent before acting on it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children_map() -> dict[int, list[int]]:
    """ppid -> [pid] for every live (non-zombie) process in /proc."""
    tree: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return tree
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) < 2 or fields[0] == b"Z":
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def descendants(pid: int | None = None) -> list[int]:
    """Live processes below ``pid`` (default: this process), parents first.
    Empty where /proc is not available."""
    from . import _reaper

    tree = _children_map()
    out: list[int] = []
    todo = [p for p in tree.get(os.getpid() if pid is None else pid, []) if p != _reaper.pid()]
    while todo:
        child = todo.pop(0)
        out.append(child)
        todo.extend(tree.get(child, []))
    return out


def terminate_descendants(timeout: float = 0.3) -> list[int]:
    """SIGTERM every live descendant, give them ``timeout`` seconds, then
    SIGKILL whoever is left. Returns the pids that were signalled.

    Descendants are found by walking /proc from our pid, so a grandchild whose
    own parent already exited (re-parented to init) is out of reach; the bridge
    is deliberately not a subreaper, because reaping strangers' exit statuses
    would break handlers that wait for their own subprocesses.
    """
    pids = descendants()
    if not pids:
        return []
    _signal_all(pids, signal.SIGTERM)
    end = time.monotonic() + timeout
    alive = pids
    while time.monotonic() < end:
        live = set(descendants())
        alive = [p for p in pids if p in live]
        if not alive:
            break
        time.sleep(0.02)
    _signal_all(alive + [p for p in descendants() if p not in pids], signal.SIGKILL)
    return pids


def kill_descendants() -> None:
    """SIGKILL every live descendant at once (forced exit). The reaper does it
    when one runs (see :mod:`snakepit_bridge._reaper`): walking /proc here
    competes for the GIL with busy handler threads and took seconds."""
    from . import _reaper

    if not _reaper.kill_children():
        _signal_all(descendants(), signal.SIGKILL)


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def flush_and_exit(code: int, timeout: float = 0.2) -> NoReturn:
    """Flush stdout/stderr and ``os._exit(code)``. Used at the end of every run:
    a normal interpreter exit joins concurrent.futures worker threads, and a
    handler blocked forever would hang it. The flush gets ``timeout`` seconds
    (a full pipe nobody reads must not keep the process alive)."""

    def flush() -> None:
        from .logging import flush as flush_logs

        flush_logs()  # info lines held for a batched write
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass

    t = threading.Thread(target=flush, daemon=True)
    t.start()
    t.join(timeout)
    os._exit(int(code))


def take_stdout() -> int:
    """Keep a private duplicate of fd 1 and return it; then fd 1 and
    ``sys.stdout`` write to stderr (or /dev/null), so stray ``print()`` and
    C-level writes of user code cannot reach the real stdout, which belongs
    to the protocol (stdio frames, gRPC mode's ready line). The duplicate is
    non-inheritable: child processes do not get it. Raises OSError if there
    is no fd 1."""
    for stream in filter(None, (sys.stdout, sys.__stdout__)):  # __stdout__ is None without a console
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream: nothing to keep
            pass
    private = os.dup(1)
    try:
        os.dup2(2, 1)
    except OSError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    sys.stdout = sys.stderr
    return private
