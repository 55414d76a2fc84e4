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

:func:`keep_large_blocks` serves blocks up to 32 MiB (glibc's largest
setting) from the heap and keeps up to :data:`KEEP_FREE_BYTES` of free memory
there for the next message. It is called the first time a worker meets a
message over 1 MiB (dispatch, the gRPC encoder), so a worker that never does
keeps glibc's defaults. Elsewhere (musl, macOS) it does nothing.
"""
from __future__ import annotations

import sys

__all__ = ["keep_large_blocks", "KEEP_FREE_BYTES", "HEAP_BLOCK_BYTES"]

#: Blocks up to this size come from the heap, not from their own mmap (glibc's maximum).
HEAP_BLOCK_BYTES = 32 * 1024 * 1024
#: Free memory kept at the top of a heap before it is given back to the kernel.
KEEP_FREE_BYTES = 256 * 1024 * 1024

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: True once the settings were applied (or tried): the call is cheap after the first.
done = False


def keep_large_blocks() -> bool:
    """Apply the settings once; True if glibc took them."""
    global done
    if done:
        return False
    done = True
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt  # AttributeError on a libc without it (musl)
        return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                   KEEP_FREE_BYTES))
    except (OSError, AttributeError):
        return False
