"""The last resort for the exit guarantees: a tiny separate process.

Every exit path inside the worker (signal handlers, the shutdown watchdog
thread, the parent watcher) is Python code, and none of it runs while a
handler holds the GIL inside C code (a catastrophic regular expression, a
C extension stuck in a loop). So the worker starts, once, a second process
that needs nothing from the worker's interpreter:

* **SIGTERM / SIGINT.** CPython's C-level signal handler writes the signal
  number to the descriptor given to :func:`signal.set_wakeup_fd`, at once and
  without the GIL. The reaper holds the read end of that pipe; on the first
  SIGTERM/SIGINT it waits ``term_budget`` seconds (the grace period plus a
  margin, just past the worker's own watchdog) and then kills the worker and
  every process below it. A second signal shortens that to ``SECOND_SIGNAL``.
* **Parent death.** It holds a pidfd of the pool (the worker's parent) and
  kills the worker ``gone_budget`` seconds after the pool dies.
* **Children.** Killing is done with the tree frozen: SIGSTOP the worker,
  walk /proc for its descendants and SIGSTOP each (a stopped process cannot
  fork), repeat until nothing new shows up, then SIGKILL them all. The worker's
  own forced exits ask the reaper for this too (byte ``KILL_CHILDREN`` on the
  same pipe): walking /proc from inside a worker whose threads fight for the
  GIL took seconds, in the reaper it takes milliseconds. Such a request also
  tells the reaper the worker is ending itself: its deadline moves to
  ``EXITING`` seconds later (at most ``EXTRA`` s past the original one), so the
  worker's own exit code usually stands.
* **Its own end.** It holds a pidfd of the worker and exits the moment the
  worker does; it ignores SIGTERM/SIGINT/SIGHUP (a terminal's Ctrl-C reaches
  the whole process group; the worker's byte is what counts).

The graceful path stays first: the worker's own handlers and watchdog act
before the reaper's deadline, and the reaper fires only when they could not.
The pipe is the one signal mechanism: nothing else in the bridge calls
``set_wakeup_fd`` or ``loop.add_signal_handler`` (which would replace it).
"""
from __future__ import annotations

import os
import select
import signal
import sys
import threading
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import subprocess

__all__ = ["KILL_CHILDREN", "kill_children", "pid", "spawn", "start"]

#: Byte the worker writes to the pipe to have its descendants killed (not a signal number).
KILL_CHILDREN = 255
#: After a second SIGTERM/SIGINT the reaper waits only this long (the worker exits FORCED itself).
SECOND_SIGNAL = 0.3
#: When the worker asks for its children to be killed it is ending itself; its
#: deadline moves to at least this long after the request (its flush takes <= 0.2 s).
EXITING = 0.25
#: ... but at most this long past the original deadline.
EXTRA = 0.05
#: After stdin hangs up with bytes still unread, the budget starts anyway once
#: nothing has been read for this long (a worker stuck in C reads nothing).
STALLED = 5.0
#: How many times a reaper that died (killed by someone) is replaced.
RESPAWNS = 5

_state: dict[str, object] = {}
_ask_lock = threading.Lock()

# The reaper itself: run as ``python -S -I -c _CODE worker pool sig_fd ack_fd term gone fmt``.
# Only os/select/signal/time: starts in ~15 ms and never imports the bridge.
_CODE = r'''
import os, select, signal, sys, time
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
worker, pool, sig_fd, ack_fd = (int(a) for a in sys.argv[1:5])
term_budget, gone_budget, fmt, second = float(sys.argv[5]), float(sys.argv[6]), sys.argv[7], float(sys.argv[8])
exiting, stalled, extra = float(sys.argv[9]), float(sys.argv[11]), float(sys.argv[12])
stdin_fd = int(sys.argv[10])
me = os.getpid()

def say(event, **kw):
    if fmt == "json":
        import json
        line = json.dumps({"event": event, "level": "error", "logger": "snakepit_bridge.reaper", "pid": worker, **kw})
    else:
        line = "[error    ] " + event + " [snakepit_bridge.reaper] " + " ".join(f"{k}={v}" for k, v in kw.items())
    try:
        os.write(2, (line + "\n").encode())
    except OSError:
        pass

def pidfd(p):
    try:
        return os.pidfd_open(p)
    except ProcessLookupError:
        return -1
    except (AttributeError, OSError):
        return None

def children():
    tree = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open("/proc/" + e + "/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        fl = st[st.rfind(b")") + 2:].split()
        if len(fl) > 1 and fl[0] not in (b"Z", b"X"):
            tree.setdefault(int(fl[1]), []).append(int(e))
    return tree

def below(root):
    tree, out, todo = children(), [], [root]
    while todo:
        for c in tree.get(todo.pop(), []):
            if c != me:
                out.append(c)
                todo.append(c)
    return out

def kill_tree(include_worker):
    frozen = []
    if include_worker:
        try:
            os.kill(worker, signal.SIGSTOP)
        except OSError:
            pass
    for _ in range(20):
        new = [p for p in below(worker) if p not in frozen]
        if not new:
            break
        for p in new:
            try:
                os.kill(p, signal.SIGSTOP)
            except OSError:
                pass
            frozen.append(p)
    for p in ([worker] if include_worker else []) + frozen:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return len(frozen)

wfd = pidfd(worker)
if wfd == -1:
    sys.exit(0)
pfd = pidfd(pool) if pool > 1 else None
poller = select.poll()
poller.register(sig_fd, select.POLLIN)
if wfd is not None:
    poller.register(wfd, select.POLLIN)
if pfd is not None and pfd >= 0:
    poller.register(pfd, select.POLLIN)
if stdin_fd >= 0:
    poller.register(stdin_fd, 0)  # never read: only POLLHUP (every writer gone) is reported
draining = None  # after the hang-up: [bytes still unread, when that last changed]
deadline = None
why = ""
signals = 0
hard = 0.0  # the latest the deadline may move to (a worker ending itself gets at most `extra` s more)
if pfd == -1:
    deadline, why = time.monotonic() + gone_budget, "parent died"
    hard = deadline + extra
while True:
    if deadline is not None:
        timeout = max(0, min(100, int((deadline - time.monotonic()) * 1000) + 1))
    elif draining is not None:
        timeout = 50
    else:
        timeout = -1 if wfd is not None and (pool <= 1 or pfd is not None) else 100  # pidfds: no polling
    events = poller.poll(timeout)
    now = time.monotonic()
    for fd, ev in events:
        if fd == wfd:
            sys.exit(0)
        if fd == sig_fd:
            data = os.read(sig_fd, 512) if ev & select.POLLIN else b""
            if not data:
                sys.exit(0)  # every write end closed: the worker is gone
            for b in data:
                if b == 255:
                    # The worker is ending itself (its watchdog, a second signal):
                    # give its last flush a moment before killing it instead.
                    if deadline is not None:
                        deadline = max(deadline, min(now + exiting, hard))
                    kill_tree(False)
                    try:
                        os.write(ack_fd, b"k")
                    except OSError:
                        pass
                elif b in (signal.SIGTERM, signal.SIGINT):
                    signals += 1
                    budget = term_budget if signals == 1 else second
                    if deadline is None or now + budget < deadline:
                        deadline, why = now + budget, "signal " + signal.Signals(b).name
                        hard = deadline + extra
        elif fd == stdin_fd:
            poller.unregister(stdin_fd)
            draining = [-1, now]
        elif pfd is not None and fd == pfd:
            poller.unregister(pfd)
            if deadline is None or now + gone_budget < deadline:
                deadline, why = now + gone_budget, "parent died"
                hard = deadline + extra
    if draining is not None:
        # The worker reads on until its copy hits EOF: the budget starts once
        # the pipe is drained, or when nothing has been read for STALLED s.
        try:
            import fcntl, struct, termios
            left = struct.unpack("i", fcntl.ioctl(stdin_fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except (ImportError, OSError):
            left = 0
        if left != draining[0]:
            draining = [left, now]
        if left == 0 or now - draining[1] >= stalled:
            draining = None
            if deadline is None or now + gone_budget < deadline:
                deadline, why = now + gone_budget, "stdin closed"
                hard = deadline + extra
    if wfd is None and os.getppid() != worker:
        sys.exit(0)
    if pfd is None and pool > 1 and deadline is None:
        try:
            os.kill(pool, 0)
        except ProcessLookupError:
            deadline, why = now + gone_budget, "parent died"
            hard = deadline + extra
        except OSError:
            pass
    if deadline is not None and time.monotonic() >= deadline:
        n = kill_tree(True)
        say("worker did not exit in time; killed it and its descendants", reason=why, descendants=n)
        sys.exit(0)
'''


def start(pool_pid: int | None, term_budget: float, gone_budget: float, log_format: str = "console",
          stdin_hup: bool = False, *, spawn_now: bool = True) -> int | None:
    """Start the reaper for this process (call once, from the main thread,
    before serving). ``pool_pid``: the parent to watch (None or <= 1: none).
    ``stdin_hup``: also end the worker ``gone_budget`` seconds after every
    writer of its stdin is gone (the caller decides whether stdin is a pipe
    the pool holds). Returns the reaper's pid, or None where it cannot run
    (not Linux, not the main thread, a wakeup fd already taken).

    ``spawn_now`` False sets everything up (the pipe a signal is written to
    from now on, the copy of stdin) but leaves starting the process to
    :func:`spawn`: a signal that comes first waits in the pipe, and the
    reaper's budget for it starts when the reaper reads it."""
    if "argv" in _state or not sys.platform.startswith("linux"):
        return _state.get("pid")  # type: ignore[return-value]
    if threading.current_thread() is not threading.main_thread():
        return None
    sig_r, sig_w = os.pipe()
    ack_r, ack_w = os.pipe()
    os.set_blocking(sig_w, False)
    stdin_fd = -1
    if stdin_hup:
        try:
            stdin_fd = os.dup(0)
        except OSError:
            stdin_fd = -1
    fds = [sig_r, sig_w, ack_r, ack_w] + ([stdin_fd] if stdin_fd >= 0 else [])
    try:
        previous = signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False)
    except ValueError:
        previous = None
    if previous != -1:  # someone else owns it (or it failed): keep theirs, run without a reaper
        if previous is not None:
            signal.set_wakeup_fd(previous)
        for fd in fds:
            os.close(fd)
        return None
    # The worker keeps the reaper's ends (sig_r, ack_w, its stdin copy) so
    # that it can start another reaper should this one die (see _watch).
    argv = [sys.executable, "-S", "-I", "-c", _CODE, str(os.getpid()), str(pool_pid or 0), str(sig_r), str(ack_w),
            repr(term_budget), repr(gone_budget), log_format, repr(SECOND_SIGNAL), repr(EXITING), str(stdin_fd),
            repr(STALLED), repr(EXTRA)]
    _state.update(argv=argv, sig_r=sig_r, sig_w=sig_w, ack_r=ack_r, ack_w=ack_w, stdin_fd=stdin_fd)
    # A child forked by a handler (multiprocessing's fork) inherits the wakeup
    # fd: a SIGTERM sent to it would read as one sent to the worker.
    os.register_at_fork(after_in_child=_forget)
    return spawn() if spawn_now else None


def spawn() -> int | None:
    """Start the reaper process set up by ``start(..., spawn_now=False)``
    (once; later calls return its pid). None if it could not start: then
    the worker runs without one (the wakeup fd is released)."""
    if "argv" not in _state or "pid" in _state or "failed" in _state:
        return _state.get("pid")  # type: ignore[return-value]
    proc = _spawn()
    if proc is None:
        signal.set_wakeup_fd(-1)
        for key in ("sig_r", "sig_w", "ack_r", "ack_w", "stdin_fd"):
            fd = cast(int, _state[key])
            if fd >= 0:
                os.close(fd)
        _state.clear()
        _state["failed"] = True
        return None
    threading.Thread(target=_watch, name="snakepit-reaper-watch", daemon=True).start()
    return proc.pid


def _spawn() -> subprocess.Popen[bytes] | None:
    argv = cast("list[str]", _state["argv"])
    import subprocess  # here: a stdio worker starts its reaper after answering its first frame

    keep = tuple(fd for fd in (cast(int, _state[k]) for k in ("sig_r", "ack_w", "stdin_fd")) if fd >= 0)
    try:
        proc = subprocess.Popen(argv, pass_fds=keep, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    except OSError:
        return None
    _state.update(pid=proc.pid, proc=proc)
    return proc


def _watch() -> None:
    """Killing the reaper must not silently remove the last resort: when it
    ends while the worker lives, say so and start another one (RESPAWNS at
    most), or say that none runs."""
    from .logging import get_logger

    log = get_logger("snakepit_bridge.reaper")
    for _ in range(RESPAWNS):
        proc = _state.get("proc")
        if proc is None:
            return
        code = proc.wait()  # type: ignore[attr-defined]
        if "argv" not in _state:  # forked child, or torn down
            return
        new = _spawn()
        if new is None:
            _state.pop("pid", None)
            log.error("the reaper process ended and no new one could start: "
                      "a handler holding the GIL may now keep the worker from exiting", status=code)
            return
        log.warning("the reaper process ended; started a new one", status=code, reaper_pid=new.pid)
    _state.pop("pid", None)
    log.error("the reaper process keeps ending; not starting another", respawns=RESPAWNS)


def _forget() -> None:
    """In a forked child: drop the wakeup fd and the reaper's pipes."""
    if "argv" not in _state:
        return
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    for key in ("sig_w", "ack_r", "sig_r", "ack_w", "stdin_fd"):
        try:
            os.close(int(_state[key]))  # type: ignore[call-overload]
        except OSError:
            pass
    _state.clear()


def pid() -> int | None:
    """The reaper's pid, if one runs (the worker's descendant walks skip it)."""
    return _state.get("pid")  # type: ignore[return-value]


def kill_children(timeout: float = 0.3) -> bool:
    """Have the reaper SIGKILL every descendant of this process (frozen first,
    so none escapes by forking); True once it confirms within ``timeout``."""
    if "pid" not in _state:
        return False
    sig_w, ack_r = int(_state["sig_w"]), int(_state["ack_r"])  # type: ignore[call-overload]
    with _ask_lock:
        try:
            os.write(sig_w, bytes([KILL_CHILDREN]))
        except OSError:
            return False
        ready, _, _ = select.select([ack_r], [], [], timeout)
        if not ready:
            return False
        try:
            os.read(ack_r, 64)
        except OSError:
            return False
        return True
