"""ping_stream: the simplest real stream."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from ..context import Context
from ..errors import InvalidArgument
from ..registry import Registry

registry = Registry()


@registry.command("ping_stream")
async def ping_stream(args: dict[str, Any], ctx: Context) -> AsyncIterator[dict[str, Any]]:
    """``count`` pings (default 5, at most 2**31 - 2), ``interval`` seconds apart (default 0).

    Runs on the event loop; the interval is an ``asyncio.sleep``, so a cancel
    or the deadline stops the stream at once, even in a long interval."""
    count, interval = args.get("count", 5), args.get("interval", 0)
    # chunk_index is an int32 on the wire: a longer stream could not be numbered.
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < 2**31 - 1:
        raise InvalidArgument(f"ping_stream 'count' must be a non-negative integer below {2**31 - 1}, got {count!r}")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0:
        raise InvalidArgument(f"ping_stream 'interval' must be a non-negative number, got {interval!r}")
    for i in range(count):
        if i and interval:
            await asyncio.sleep(interval)
        yield {"ping_number": i + 1, "count": count, "timestamp": time.time(), "message": f"Ping {i + 1} of {count}"}
