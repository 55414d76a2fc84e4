"""How deeply an incoming value may nest: the one check, made where it is decoded.

An argument nested more than :data:`MAX_DEPTH` lists/maps deep is an
:class:`~snakepit_bridge.errors.InvalidArgument`: it would fail later, in a
handler's recursion or in the encoder (orjson stops at 255 levels; a command
may wrap its arguments in a few more, as echo and Execute's collected chunks
do), as a crash. The decoders call :func:`check_json` (gRPC args with JSON,
stdio JSON frames) and :func:`check` (MessagePack) on what they decode.

The cheap proof first: every level of nesting costs a JSON text one ``[`` or
``{`` byte (a MessagePack text one header byte), so a text holding at most
``limit`` of them (or at most ``limit`` bytes) cannot nest deeper. Counting
stops at ``limit + 1``; ``bytes.find`` runs at memchr speed, so a 10 MB list
of numbers costs two scans (~1 ms) where walking its items cost ~8 ms. Only
a text with more brackets (a list of records, say) gets the walk, which goes
level by level: the types of a level's items are gathered at C speed, and
only a level that holds containers is looked at item by item (~200 ms for
100,000 small records became ~50 ms).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import chain, compress, repeat
from operator import is_, is_not
from typing import Any

from ..errors import InvalidArgument

__all__ = ["MAX_DEPTH", "check", "check_json"]

#: Deepest nesting of lists/maps accepted in an argument (the argument itself is level 1).
MAX_DEPTH = 200

_NESTED = frozenset((list, dict, tuple))  # decoders build exactly these types, never subclasses


def check_json(data: bytes | bytearray, value: Any, limit: int = MAX_DEPTH,
               error: Callable[[str], Exception] = InvalidArgument) -> Any:
    """``value`` (decoded from the JSON text ``data``) if it nests no deeper
    than ``limit`` levels, else ``error`` (:class:`InvalidArgument`)."""
    if len(data) <= limit or _brackets_within(data, limit):
        return value
    return check(value, limit, None, error)


def check(value: Any, limit: int = MAX_DEPTH, data: bytes | bytearray | None = None,
          error: Callable[[str], Exception] = InvalidArgument) -> Any:
    """``value`` if it nests no deeper than ``limit`` levels (a list or map is
    level 1), else ``error`` (:class:`InvalidArgument`) saying so. ``data``:
    the MessagePack text it was decoded from, if any (one that short cannot
    nest deeper)."""
    if data is not None and len(data) <= limit:
        return value
    level = [value] if type(value) in _NESTED else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise error(f"an argument is nested more than {MAX_DEPTH} levels deep")
        items = _children(level)
        # The types present, at C speed: a wide list of numbers or strings (the
        # common large argument) holds no container and needs no Python loop.
        if _NESTED.isdisjoint(set(map(type, items))):
            break
        level = [item for item in items if type(item) in _NESTED]
    return value


def _brackets_within(data: bytes | bytearray, limit: int) -> bool:
    """True if ``data`` holds at most ``limit`` ``[`` and ``{`` bytes together
    (inside strings too: a bound, not a parse)."""
    found = 0
    for bracket in (b"[", b"{"):
        i = data.find(bracket)
        while i >= 0:
            found += 1
            if found > limit:
                return False
            i = data.find(bracket, i + 1)
    return True


def _children(level: list[Any]) -> Iterable[Any]:
    """The items of the lists and the values of the maps in ``level``."""
    if len(level) == 1:
        one = level[0]
        return one.values() if type(one) is dict else one
    kinds = list(map(type, level))
    seqs = compress(level, map(is_not, kinds, repeat(dict)))
    dicts = compress(level, map(is_, kinds, repeat(dict)))
    return list(chain(chain.from_iterable(seqs), chain.from_iterable(map(dict.values, dicts))))
