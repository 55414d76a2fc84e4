"""What a stream is made of.

Dispatch turns every handler into an async stream of :class:`Chunk` records,
of which exactly one, the last, has ``is_final`` set. Transports encode them.

A generator handler yields plain dicts (one chunk each), any other value
(sent as ``{"value": x}``), or one of the markers below.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Chunk", "ChunkError", "Final", "as_chunk_data", "to_chunk"]


@dataclass(slots=True)
class Chunk:
    data: dict[str, Any]
    is_final: bool = False
    error: str = ""
    index: int = 0
    timestamp_ns: int = field(default_factory=time.time_ns)
    #: The transport's encoding of ``data`` (set by dispatch when the request has an encoder).
    payload: Any = None
    #: For a final error chunk: the status name of the failure (e.g.
    #: ``DEADLINE_EXCEEDED``), so a transport that collects a stream into one
    #: answer can report it. Empty otherwise (per-item errors have none).
    code: str = ""


@dataclass(slots=True)
class ChunkError:
    """Yield this to report a failed item and keep streaming: the chunk's
    ``error`` is set, ``is_final`` is not."""

    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Final:
    """Yield this to send the last chunk yourself (e.g. a summary); the stream
    ends with it and the generator is closed."""

    data: dict[str, Any] = field(default_factory=dict)


def as_chunk_data(value: Any) -> dict[str, Any]:
    """The chunk map for a yielded or returned value: dicts as they are,
    ``None`` as an empty map, anything else under ``"value"``."""
    if isinstance(value, dict):
        return value
    if value is None:
        return {}
    return {"value": value}


def to_chunk(item: Any) -> Chunk:
    """The chunk for one item a generator yielded (index and payload unset)."""
    if type(item) is dict:  # the common case first: one check per chunk
        return Chunk(item)
    if isinstance(item, Chunk):
        return item
    if isinstance(item, ChunkError):
        return Chunk(item.data, error=item.message or "error")
    if isinstance(item, Final):
        return Chunk(item.data, is_final=True)
    return Chunk(as_chunk_data(item))


def encoded_chunk(chunk: Chunk, encode: Callable[[dict[str, Any]], Any] | None) -> Chunk:
    """Set ``chunk.payload`` unless it is set already (by the producer thread)."""
    if encode is not None and chunk.payload is None:
        chunk.payload = encode(chunk.data)
    return chunk
