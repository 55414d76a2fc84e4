"""What both transports need to end well: shutdown timings, last-words log
lines and the parent watcher. Nothing here runs on the event loop or imports
grpc (stdio mode must not load it): a handler that blocks the loop must not
keep SIGTERM or a dead parent from ending the process."""
from __future__ import annotations

import itertools
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from ._proc import set_parent_death_signal

__all__ = ["PARENT_GONE_GRACE", "REAPER_LAG", "SHUTDOWN_MARGIN", "say", "shutdown_switch_interval", "spawn_reaper", "start_reaper", "stdin_is_watched", "watch_parent"]

#: Grace for in-flight calls when the pool is gone (stdin EOF, parent died):
#: nobody waits for the answers, and the worker must exit within a second.
PARENT_GONE_GRACE = 0.25
#: Shutdown may take the grace period plus this, then the watchdog exits.
#: 1.5 s + 0.1 s leaves the pool's 2 s before SIGKILL a margin for a loaded machine.
SHUTDOWN_MARGIN = 0.1
#: The reaper process (the last resort, :mod:`._reaper`) kills the worker this
#: long after the in-process watchdog should have ended it: 1.5 + 0.1 + 0.05 s
#: (0.05 s more at most when the watchdog has begun ending the worker).
REAPER_LAG = 0.05
#: The GIL switch interval during shutdown (see shutdown_switch_interval).
SHUTDOWN_SWITCH = 0.0005
#: How long a last-words log line may take before exiting without it.
SAY_TIMEOUT = 0.1
#: How often the parent pid is re-checked (the portable orphan check).
PARENT_POLL = 0.25
#: Signal asked for on parent death (Linux); handled only if the parent changed.
PARENT_DEATH_SIGNAL = signal.SIGHUP


def shutdown_switch_interval() -> None:
    """Once shutdown begins: have busy handler threads hand over the GIL
    every SHUTDOWN_SWITCH seconds instead of every 5 ms. With four CPU-bound
    threads each GIL hand-over to the shutdown code (the loop, the watchdog)
    cost up to 20 ms, and the graceful exit lost to the reaper every time."""
    import sys

    sys.setswitchinterval(min(sys.getswitchinterval(), SHUTDOWN_SWITCH))


def say(log: Any, event: str, level: str = "warning", **fields: Any) -> None:
    """Log without risking the exit: from a signal handler the main thread
    may hold the log stream's lock, and a full stderr pipe blocks a write;
    give it SAY_TIMEOUT seconds, then move on (the line may come later)."""
    t = threading.Thread(target=lambda: getattr(log, level)(event, **fields), daemon=True)
    t.start()
    t.join(SAY_TIMEOUT)


def start_reaper(grace_period: float, parent: int | None, log_format: str, stdin_hup: bool = False,
                 *, spawn_now: bool = True) -> int | None:
    """Start the last-resort reaper process (see :mod:`._reaper`) with the
    same budgets as the in-process watchdog plus REAPER_LAG: SIGTERM ->
    killed ``grace_period + SHUTDOWN_MARGIN + REAPER_LAG`` seconds later at
    the latest; parent (``parent``; None = not watched) dead, or (with
    ``stdin_hup``) every writer of stdin gone -> the short grace plus the
    same margins. Returns the reaper's pid or None. ``spawn_now`` False:
    set up now, the process is started by :func:`spawn_reaper` (a stdio
    worker with no user code does it once it has answered its first frame,
    so that the reaper's own start does not compete with the worker's)."""
    from . import _reaper

    margin = SHUTDOWN_MARGIN + REAPER_LAG
    return _reaper.start(parent, grace_period + margin, min(grace_period, PARENT_GONE_GRACE) + margin, log_format,
                         stdin_hup, spawn_now=spawn_now)


def spawn_reaper() -> int | None:
    """Start the reaper set up by ``start_reaper(..., spawn_now=False)``; a
    no-op returning its pid once it runs (or None if there is none)."""
    from . import _reaper

    return _reaper.spawn()


def stdin_is_watched(stdio_mode: bool) -> bool:
    """Whether EOF on stdin ends the worker: stdio mode reads frames from it
    (a pipe or a socket the pool holds); gRPC mode watches a piped stdin (see
    ``server._watch_stdin``). A terminal, a file or /dev/null is not watched."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or (stdio_mode and stat.S_ISSOCK(mode))


def watch_parent(parent: int, parent_gone: Callable[[str], None], log: Any) -> None:
    """Call ``parent_gone`` (once) when the parent process dies. Two lines,
    neither on the event loop: Linux's parent-death signal, handled by a plain
    signal handler (immediate), and a daemon thread polling ``os.getppid()``
    every PARENT_POLL seconds (portable). Linux sends the signal when the
    parent *thread* that started us exits, so it counts only if our parent
    pid actually changed."""
    told = itertools.count()  # next() is atomic: told once

    def check(source: str) -> None:
        if os.getppid() != parent:
            if not next(told):
                parent_gone(f"parent died ({source})")
        elif source == "signal":
            say(log, "parent-death signal but the parent lives (its thread ended); ignored", level="debug")

    if threading.current_thread() is threading.main_thread() and set_parent_death_signal(PARENT_DEATH_SIGNAL):
        # Kept through shutdown: should the parent die in its last moments,
        # SIGHUP's default action would end us with a non-zero status.
        signal.signal(PARENT_DEATH_SIGNAL, lambda _signum, _frame: check("signal"))
    check("startup")  # the parent may have died before the signal was armed

    def poll() -> None:
        while True:
            time.sleep(PARENT_POLL)
            check("poll")

    threading.Thread(target=poll, name="snakepit-parent-watch", daemon=True).start()
