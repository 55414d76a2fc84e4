"""Large JSON and MessagePack in pieces: byte for byte what one call writes.

orjson and msgpack hold the GIL for a whole call, so one call over 10 MB in
a worker thread would stall the event loop (Health and every other call)
for all of its tens of ms. In dispatch's worker threads
(:func:`.values.encode_in_pieces`) a value whose JSON may pass ``_PIECE``
bytes is encoded here instead, in pieces of about that size; between pieces
Python code runs, so a thread that waits for the GIL (the event loop's)
gets it within the switch interval (5 ms) plus one piece (~0.5-1 ms).

How a value is cut: lists and tuples in slices of items, dicts in groups of
entries, numpy arrays in rows, long strings in runs of characters; an item
too big for a piece is cut the same way on its own, one level deeper. Each
piece is one encoder call on the slice wrapped in as many lists as it is
deep in the whole (so the encoder's nesting limit applies alike), with the
whole's options and ``default``, its brackets (header) cut off. A piece
that one call would not encode on its own (an error, the stdlib fallback for
deep values) makes the whole value go through one call instead.

How big a slice is (:func:`_runs`): the first holds 64 items; each next one
as many as make ``_PIECE`` bytes at the bytes per item the last piece
produced (at most 8 times more). Items are not all looked at before they are
encoded: a type check of every item cost about as much as encoding a list
of numbers (10 MB of floats: 31 ms in pieces against 15 ms in one call; now
about the same). A sample of each slice is checked (its first and last
items and one in every ``len/8`` between); a sampled item whose JSON may
pass ``_PIECE`` (a string that long, or a container or array that a walk
bounded by that size cannot prove smaller, :func:`.values._json_walk`) is
cut on its own. A short slice (at most 2,048 items, so ~128 bytes or more
each) whose sample holds only numbers and strings has every item's type
checked too, so a list hidden among numbers is found. The price of the
sample: in a long slice of small items, or among containers (records,
rows), a big item that falls between the sampled ones is encoded inside its
slice's piece, i.e. as one call would encode it. That is the worst case: the
loop waits as long as one call of that item would hold it, bounded by the
message limit (``--max-message-mb``).

The pieces are copied into one growing buffer as they come (:class:`_Out`),
not joined at the end: see there why.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any

import orjson

from . import npy
from .values import (
    _JSON_OPTS,
    _SCALAR_TYPES,
    _STR_PIECE,
    _big_ints_spliced,
    _dumps_json_whole,
    _dumps_msgpack_whole,
    _json_walk,
)

__all__ = ["dumps_json", "dumps_msgpack"]

_FLAT_TYPES = _SCALAR_TYPES | {str}

_PIECE = 1 << 18  # bytes of text per piece (~0.5-1 ms of encoding; 512 KiB cost 4% more CPU, 1 MiB 30%)
_ARRAY_PIECE = 1 << 15  # numpy elements per piece
_MAX_SPLIT_DEPTH = 64  # below this, a value is one piece (orjson stops at 255 levels anyway)
_FIRST = 64  # items in a container's first slice
_GROWTH = 8  # a slice holds at most this many times the items of the one before
_SAMPLE = 8  # items of a slice checked for size: one in every len/8, the first and the last
_EXACT = 2048  # a slice of at most this many items (of ~128 bytes or more) is checked item by item


class _Whole(Exception):
    """A piece cannot be encoded on its own: encode the whole value in one call."""


def dumps_json(value: Any, default: Any) -> bytes:
    """:func:`.values.dumps_json` of ``value``, in pieces when its JSON may
    pass ``_PIECE`` bytes."""
    if _json_walk(value, _PIECE) is False:
        return _dumps_json_whole(value, default)
    out = _Out()
    try:
        _json_pieces(value, default, 0, out)
    except _Whole:
        return _dumps_json_whole(value, default)
    return out.getvalue()


def dumps_msgpack(value: Any) -> bytes:
    """MessagePack of ``value``, a large list or dict in pieces (the same
    bytes: an array or map is its header and then its items one after another)."""
    t = type(value)
    if not (t is list or t is tuple or t is dict) or _json_walk(value, _PIECE) is False:
        return _dumps_msgpack_whole(value)
    out = _Out()
    try:
        _msgpack_pieces(value, 0, out)
    except _Whole:
        return _dumps_msgpack_whole(value)
    return out.getvalue()


class _Out(io.BytesIO):
    """The text so far. Each piece is copied in as it comes, so its own
    buffer is freed at once and the next piece reuses that memory; the
    buffer grows in place (realloc) and ``getvalue()`` hands it over without
    a copy. A list of pieces joined at the end touched twice the fresh
    memory of one call, and on a virtual machine the page faults of fresh
    memory cost more than the copy (10 MB of floats: 22 vs 17.5 ms, one
    call 14 ms)."""

    append = io.BytesIO.write


# -- the slicing both encoders share ------------------------------------------------------------

def _runs(value: Any, run: Callable[[Any], int], alone: Callable[[Any], None]) -> None:
    """Hand the items of ``value`` (a list or tuple; a dict's entries) in
    order to ``run`` in slices (a dict's: smaller dicts) of about ``_PIECE``
    bytes of output (``run`` writes one and returns the bytes it wrote), and
    a sampled item found big to ``alone`` (for a dict, a ``(key, value)`` pair)."""
    if type(value) is dict:
        _dict_runs(value, run, alone)
        return
    n, i, k = len(value), 0, _FIRST
    while i < n:
        part = value[i:i + k]
        big = _first_big(part)
        if big is None:
            m = len(part)
            size = run(part)
            del part  # before the next slice: its memory is the next one's
            k = _next_k(k, size, m)
            i += m
            continue
        if big:
            k = _next_k(k, run(part[:big]), big)
        alone(part[big])
        i += big + 1


def _dict_runs(d: dict[Any, Any], run: Callable[[Any], int], alone: Callable[[Any], None]) -> None:
    """:func:`_runs` for a dict: each slice is a dict built from the next
    entries at C speed (no pair is made for an entry written with its slice)."""
    entries = iter(d.items())
    pending: list[tuple[Any, Any]] = []  # entries taken, not yet written (after one written alone)
    k = _FIRST
    while True:
        if pending:
            part = dict(pending[:k])
            del pending[:k]
        else:
            part = dict(islice(entries, k))
        if not part:
            return
        big = _first_big(list(part.values()), list(part))
        if big is None:
            m = len(part)
            size = run(part)
            del part
            k = _next_k(k, size, m)
            continue
        items = list(part.items())  # rare: the slice is cut at its big entry
        if big:
            k = _next_k(k, run(dict(items[:big])), big)
        alone(items[big])
        pending[:0] = items[big + 1:]


def _first_big(part: Sequence[Any], keys: Sequence[Any] | None = None) -> int | None:
    """The index of the first item of ``part`` found to be big (its JSON may
    pass ``_PIECE`` bytes; for a dict's values, or its key in ``keys``),
    else None. Looks at a sample; when ``part`` has at most ``_EXACT`` items
    and the sample (up to a big item it found) holds only scalars and
    strings, at every item's type too, so a list or map hidden among numbers,
    or a long string among short ones, is found. That costs ~20 ns an item,
    under 10% of encoding items of 128 bytes or more, and is skipped for the
    long slices of small items."""
    n = len(part)
    step = max(1, n // _SAMPLE)
    found = None
    containers = False
    for j in (0, *range(step - 1, n - 1, step), n - 1):
        if keys is not None and type(keys[j]) is str and len(keys[j]) > _STR_PIECE:
            found = j
            break
        item = part[j]
        t = type(item)
        if t in _SCALAR_TYPES:
            continue
        if t is str:
            if len(item) > _STR_PIECE:
                found = j
                break
            continue
        if _json_walk(item, _PIECE) is not False:
            found = j
            break
        containers = True
    if containers or n > _EXACT or found == 0:
        return found
    items = part[:found] if found is not None else part
    types = set(map(type, items))
    if types <= _SCALAR_TYPES:
        return found
    if types <= _FLAT_TYPES:
        if max(map(len, items if len(types) == 1 else [x for x in items if type(x) is str])) <= _STR_PIECE:
            return found
    for j, item in enumerate(items):  # rare: something the sample missed
        t = type(item)
        if t not in _SCALAR_TYPES and (len(item) > _STR_PIECE if t is str else _json_walk(item, _PIECE) is not False):
            return j
    return found


def _next_k(k: int, size: int, n: int) -> int:
    """Items in the next slice: ``_PIECE`` bytes at the last slice's bytes
    per item (``size`` bytes for ``n`` items), growing at most ``_GROWTH`` times."""
    return max(1, min(_GROWTH * k, n * _PIECE // max(size, 1)))


# -- JSON ---------------------------------------------------------------------------------------

def _json_piece(value: Any, default: Any, depth: int, strip: int) -> Any:
    """The JSON text of ``value`` as written ``depth`` containers deep,
    without ``strip`` bytes at each end (a container's brackets)."""
    wrapped = value
    for _ in range(depth):
        wrapped = [wrapped]
    try:
        try:
            data = orjson.dumps(wrapped, default=default, option=_JSON_OPTS)
        except TypeError:
            data = orjson.dumps(_big_ints_spliced(wrapped), default=default, option=_JSON_OPTS)
    except Exception:  # noqa: BLE001 - whatever it is, the one-shot encoder decides
        raise _Whole() from None
    cut = depth + strip
    return memoryview(data)[cut:len(data) - cut] if cut else data


def _json_pieces(value: Any, default: Any, depth: int, out: Any) -> None:
    """Append the JSON text of ``value`` (``depth`` containers deep) to ``out`` (an :class:`_Out`) in pieces."""
    t = type(value)
    if depth > _MAX_SPLIT_DEPTH:
        out.append(_json_piece(value, default, depth, 0))
    elif t is list or t is tuple or t is dict:
        _json_container(value, default, depth, out)
    elif t is str and len(value) > _STR_PIECE:
        out.append(b'"')
        for i in range(0, len(value), _STR_PIECE):
            out.append(_json_piece(value[i:i + _STR_PIECE], default, depth, 1))
        out.append(b'"')
    elif npy.is_ndarray(value) and value.ndim and value.size > _ARRAY_PIECE:
        _array_pieces(value, default, depth, out)
    elif t is set or t is frozenset:
        as_list = _by_default(value, default)  # what orjson does with a set
        if type(as_list) is list:
            _json_pieces(as_list, default, depth, out)
        else:
            out.append(_json_piece(as_list, default, depth, 0))
    else:
        out.append(_json_piece(value, default, depth, 0))


def _json_container(value: Any, default: Any, depth: int, out: _Out) -> None:
    is_dict = type(value) is dict
    out.append(b"{" if is_dict else b"[")
    start = out.tell()

    def comma() -> None:
        if out.tell() > start:
            out.append(b",")

    def run(part: Any) -> int:
        data = _json_piece(part, default, depth, 1)
        comma()
        out.append(data)
        return len(data)

    def alone(item: Any) -> None:
        comma()
        if is_dict:
            key, item = item
            head = _json_piece({key: None}, default, depth, 1)  # '"key":null'
            out.append(head[:len(head) - 4])
        _json_pieces(item, default, depth + 1, out)

    _runs(value, run, alone)
    out.append(b"}" if is_dict else b"]")


def _array_pieces(a: Any, default: Any, depth: int, out: Any) -> None:
    """A numpy array in slices along its first axis (each encoded as the whole
    is: natively by orjson, or through ``default``); rows longer than a piece
    each in their own pieces."""
    # orjson writes a C-contiguous array itself, any other through ``default``
    # (as tolist()); a slice of a non-contiguous array may be contiguous, so
    # such slices go through ``default`` here, as the whole would.
    native = a.flags.c_contiguous
    rows = a.shape[0]
    row_size = a.size // rows
    out.append(b"[")
    if row_size > _ARRAY_PIECE:
        for i in range(rows):
            if i:
                out.append(b",")
            _json_pieces(a[i] if native else _by_default(a[i], default), default, depth + 1, out)
    else:
        step = max(1, _ARRAY_PIECE // max(row_size, 1))
        for i in range(0, rows, step):
            if i:
                out.append(b",")
            part = a[i:i + step]
            out.append(_json_piece(part if native else _by_default(part, default), default, depth, 1))
    out.append(b"]")


def _by_default(value: Any, default: Any) -> Any:
    try:
        return default(value)
    except Exception:  # noqa: BLE001 - the one-shot encoder raises it
        raise _Whole() from None


# -- MessagePack --------------------------------------------------------------------------------

def _msgpack_header(n: int, small: int, b16: int) -> bytes:
    """The header of an array (``small`` 0x90, ``b16`` 0xdc) or map (0x80, 0xde) of ``n`` items."""
    if n <= 15:
        return bytes((small | n,))
    if n <= 0xFFFF:
        return bytes((b16,)) + n.to_bytes(2, "big")
    return bytes((b16 + 1,)) + n.to_bytes(4, "big")


def _msgpack_piece(value: Any, depth: int, header: int) -> Any:
    """MessagePack of ``value`` as packed ``depth`` containers deep (its
    nesting limit applies alike), without its first ``header`` bytes."""
    wrapped = value
    for _ in range(depth):
        wrapped = [wrapped]  # each adds one byte in front: fixarray of 1
    try:
        data = _dumps_msgpack_whole(wrapped)
    except Exception:  # noqa: BLE001 - whatever it is, the one-shot encoder decides
        raise _Whole() from None
    cut = depth + header
    return memoryview(data)[cut:] if cut else data


def _msgpack_pieces(value: Any, depth: int, out: Any) -> None:
    """Append the MessagePack of ``value`` (``depth`` containers deep) to ``out`` (``append``) in pieces."""
    t = type(value)
    if depth > _MAX_SPLIT_DEPTH or not (t is list or t is tuple or t is dict):
        out.append(_msgpack_piece(value, depth, 0))
        return
    is_dict = t is dict
    small, b16 = (0x80, 0xDE) if is_dict else (0x90, 0xDC)
    out.append(_msgpack_header(len(value), small, b16))

    def run(part: Any) -> int:
        data = _msgpack_piece(part, depth, len(_msgpack_header(len(part), small, b16)))
        out.append(data)
        return len(data)

    def alone(item: Any) -> None:
        if is_dict:
            key, item = item
            out.append(_msgpack_piece(key, depth + 1, 0))
        _msgpack_pieces(item, depth + 1, out)

    _runs(value, run, alone)
