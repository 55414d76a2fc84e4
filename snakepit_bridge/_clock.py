"""UTC timestamps as ISO 8601 with microseconds and ``Z``
(``2026-01-02T03:04:05.123456Z``): the form of the stdio protocol's
``timestamp`` fields and of every log line.

Several are made per call, so the date and time of day are formatted once a
second and only the microseconds each time (a quarter of ``datetime``'s cost).
"""
from __future__ import annotations

import time

__all__ = ["iso_utc"]

_last: tuple[int, str] = (-1, "")  # (whole second, its text); replaced whole, so threads may share it


def iso_utc(seconds: float | None = None) -> str:
    """``seconds`` since the epoch (default: now) as UTC ISO 8601, microseconds truncated."""
    global _last
    if seconds is None:
        seconds = time.time()
    whole = int(seconds)  # not before 1970
    last = _last
    if whole != last[0]:
        last = _last = (whole, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole)))
    return "%s%06dZ" % (last[1], (seconds - whole) * 1_000_000)  # %d truncates, as int() would
