"""ping_stream: the simplest real stream."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from ..context import Context
from ..errors import InvalidArgument
from ..params import Param
from ..registry import Registry

registry = Registry()


@registry.command("ping_stream", extra="ignore")
async def ping_stream(ctx: Context, *,
                      count: Annotated[int, Param("pings to send (chunk_index is an int32)", ge=0, le=2**31 - 2)] = 5,
                      interval: Annotated[int | float, Param("seconds between pings", ge=0, le=86400)] = 0
                      ) -> AsyncIterator[dict[str, Any]]:
    """``count`` pings (default 5, at most 2**31 - 2), ``interval`` seconds apart (default 0).

    Runs on the event loop; the interval is an ``asyncio.sleep``, so a cancel
    or the deadline stops the stream at once, even in a long interval."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidArgument(f"ping_stream 'count' must be a non-negative integer, got {count!r}")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0:
        raise InvalidArgument(f"ping_stream 'interval' must be a non-negative number, got {interval!r}")
    for i in range(count):
        if i and interval:
            await asyncio.sleep(interval)
        yield {"ping_number": i + 1, "count": count, "timestamp": time.time(), "message": f"Ping {i + 1} of {count}"}
