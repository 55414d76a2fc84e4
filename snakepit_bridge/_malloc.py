"""Keep large blocks in the heap once a worker moves large messages (glibc).

By default glibc's malloc serves every block over 128 KiB (raised on the fly
up to the largest block freed so far) with a fresh ``mmap`` and returns it with
``munmap``, and gives back any free memory at the top of the heap over twice
that. A 10 MB message is copied several times on its way through (gRPC's
receive, protobuf's parse, the arguments, the response, its serialization,
gRPC's send), most of them on the event loop with the GIL held; a copy into
freshly mapped memory makes the kernel zero-fill 2,560 pages, 3-6x slower
than into reused memory (10 MB in isolation: 6-15 ms instead of 1.2-2.5 ms
per copy on a loaded machine). In the soak (docs/performance.md, "Health
under load") this halved the bridge's page faults (42-50k/s -> 23-26k/s)
and trimmed Execute's serialize on the loop (3.9-7.1 -> 3.3-3.5 ms).

Each message over 1 MiB calls :func:`large_message` (dispatch, the gRPC
encoder). The first one makes glibc serve blocks up to 32 MiB (its largest
setting) from the heap and keep up to ``--malloc-keep-mb`` (default
:data:`KEEP_FREE_BYTES`) of free memory in each heap for the next message; a
worker that never meets a large message keeps glibc's defaults, and
``--malloc-keep-mb 0`` keeps them always. What a burst left in the heaps is
given back (``malloc_trim``, in a timer thread: it does not hold the GIL)
once no large message has come for :data:`IDLE_SECONDS`, so an idle worker's
memory returns to about its live data. Elsewhere (musl, macOS) it does nothing.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

__all__ = ["large_message", "configure", "KEEP_FREE_BYTES", "HEAP_BLOCK_BYTES", "IDLE_SECONDS"]

#: Blocks up to this size come from the heap, not from their own mmap (glibc's maximum).
HEAP_BLOCK_BYTES = 32 * 1024 * 1024
#: Free memory kept in a heap before it is given back to the kernel (``--malloc-keep-mb``'s default).
KEEP_FREE_BYTES = 256 * 1024 * 1024
#: Quiet time (no large message) after which the heaps give back what they keep.
IDLE_SECONDS = 2.0

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_keep = KEEP_FREE_BYTES
_libc: Any = None  # set once the settings were applied
_last = 0.0  # monotonic time of the last large message
_timer: threading.Timer | None = None
_lock = threading.Lock()

#: True once the settings were applied or refused: :func:`keep_large_blocks` then does nothing.
done = False


def configure(keep_bytes: int) -> None:
    """``--malloc-keep-mb``: free bytes a heap keeps after a large message; 0 leaves glibc's defaults."""
    global _keep, done
    _keep = keep_bytes
    done = keep_bytes <= 0


def large_message() -> None:
    """A message over 1 MiB passes: apply the settings (once) and give the
    memory back after :data:`IDLE_SECONDS` without another one."""
    global _last, _timer
    if not done:
        keep_large_blocks()
    if _libc is None:
        return
    _last = time.monotonic()
    if _timer is None:
        with _lock:
            if _timer is None:
                _timer = _arm(IDLE_SECONDS)


def _arm(delay: float) -> threading.Timer:
    timer = threading.Timer(delay, _trim_if_idle)
    timer.daemon = True
    timer.name = "snakepit-malloc-trim"
    timer.start()
    return timer


def _trim_if_idle() -> None:
    global _timer
    with _lock:
        quiet = time.monotonic() - _last
        if quiet < IDLE_SECONDS:
            _timer = _arm(IDLE_SECONDS - quiet)
            return
        _timer = None
    _libc.malloc_trim(0)


def keep_large_blocks() -> bool:
    """Apply the settings once; True if glibc took them."""
    global done, _libc
    if done:
        return False
    done = True
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)  # its calls release the GIL
        mallopt, _ = libc.mallopt, libc.malloc_trim  # AttributeError on a libc without them (musl)
    except (OSError, AttributeError):
        return False
    if not (mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES) and mallopt(_M_TRIM_THRESHOLD, _keep)):
        return False
    _libc = libc
    return True
