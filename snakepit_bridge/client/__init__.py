"""A small typed client for the bridge: tests, benchmarks, notebooks and debugging.

    with Client("127.0.0.1:50051") as c:
        c.execute("ping").result
        for chunk in c.stream("ping_stream", {"count": 3}):
            print(chunk.data)
        with c.pull("ping_stream", {"count": 100}, batch_size=10) as chunks:
            for chunk in chunks:        # batches fetched ahead; leaving early closes the generator
                ...

    async with AsyncClient("127.0.0.1:50051") as c:
        async for chunk in c.pull("ping_stream", {"count": 100}):
            ...

From a shell::

    python -m snakepit_bridge.client --port 50051 call ping '{"a": 1}'
    python -m snakepit_bridge.client --port 50051 stream ping_stream '{"count": 3}'
    python -m snakepit_bridge.client --port 50051 pull ping_stream '{"count": 100}' --limit 5
    python -m snakepit_bridge.client --port 50051 describe [COMMAND]

How values are encoded and decoded (and ``elixir_style=True``): see
:mod:`snakepit_bridge.client._wire`. The default message limit
(``max_message_mb=100``) matches the bridge's ``--max-message-mb`` default,
both ways. Guide: docs/client.md.
"""
from __future__ import annotations

from ._async import AsyncClient, AsyncPull, AsyncStream
from ._cli import main
from ._sync import Client, Pull, Stream
from ._wire import (
    ACCEPT_ENCODINGS,
    ClientError,
    CommandDescription,
    GeneratorError,
    Response,
    StreamChunk,
    decode_values,
    encode_args,
)

__all__ = [
    "ACCEPT_ENCODINGS", "AsyncClient", "AsyncPull", "AsyncStream", "Client", "ClientError", "CommandDescription",
    "GeneratorError", "Pull", "Response", "Stream", "StreamChunk", "decode_values", "encode_args", "main",
]
