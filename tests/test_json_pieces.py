"""The chunked JSON and MessagePack encoders (off the event loop) write
exactly the one-shot encoders' bytes, and raise what they raise
(docs/protocol.md, "Values the bridge sends")."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakepit_bridge.codecs import pieces as p
from snakepit_bridge.codecs import values as v
from snakepit_bridge.dispatch import Dispatcher, Request
from snakepit_bridge.registry import Registry

DEFAULTS = {"plain": v._json_default, "bytes as text": v._json_default_text}


def both(value: Any, default: Any) -> tuple[Any, Any]:
    """(one-shot, pieces): bytes, or the exception's type and message."""
    out = []
    for encode in (v._dumps_json_whole, p.dumps_json):
        try:
            out.append(encode(value, default))
        except Exception as exc:  # noqa: BLE001 - compared, not hidden
            out.append((type(exc), str(exc)))
    return out[0], out[1]


@pytest.fixture
def tiny_pieces(monkeypatch):
    """Pieces of a few bytes, so that small random values are split everywhere."""
    monkeypatch.setattr(p, "_PIECE", 24)
    monkeypatch.setattr(p, "_STR_PIECE", 3)
    monkeypatch.setattr(p, "_ARRAY_PIECE", 4)
    monkeypatch.setattr(p, "_FIRST", 2)
    monkeypatch.setattr(p, "_SAMPLE", 2)
    monkeypatch.setattr(p, "_EXACT", 3)  # longer slices trust the sample alone


DTYPES = ["float64", "float32", "float16", "int64", "int8", "uint32", "bool", "complex64", "object"]


@st.composite
def arrays(draw: Any) -> Any:
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    dtype = draw(st.sampled_from(DTYPES))
    a = np.arange(int(np.prod(shape))).reshape(shape) * 0.37
    a = np.asarray(a).astype(dtype)
    if a.ndim >= 2 and draw(st.booleans()):
        a = a[:, ::2]  # not contiguous
    elif a.ndim >= 1 and draw(st.booleans()):
        a = a[::-1]
    return a


scalars = (st.none() | st.booleans() | st.floats() | st.integers(-2**63, 2**64 - 1)
           | st.integers(-10**30, 10**30) | st.text(max_size=12) | st.binary(max_size=4)
           | st.sampled_from(["\ud800", "\x00\"\\\n", "é€😀" * 3]) | arrays())
keys = st.text(max_size=5) | st.integers(-3, 3) | st.booleans() | st.none() | st.floats(-2, 2)
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=12) | st.lists(inner, max_size=6).map(tuple)
                   | st.dictionaries(keys, inner, max_size=8) | st.frozensets(st.integers(-5, 5), max_size=4)),
    max_leaves=60)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values, default=st.sampled_from(sorted(DEFAULTS)))
def test_pieces_are_the_one_shot_text(tiny_pieces, value, default):
    whole, pieces = both(value, DEFAULTS[default])
    assert pieces == whole


@pytest.mark.parametrize("default", sorted(DEFAULTS))
def test_pieces_of_deep_and_odd_values(tiny_pieces, default):
    deep: Any = list(range(50))
    for _ in range(300):  # past orjson's 255 levels: the one-shot falls back to the stdlib
        deep = [deep, 1e-7]
    odd = [{"a": [1.5e-7, 2**70, float("nan")] * 5, 2: {"x": "y" * 20}}, {3, 1}, np.float32(0.1),
           np.zeros((3, 9), dtype=np.float32) + np.float32(0.1), b"\xff\xfe" * 9, "\ud800" * 9]
    for value in (deep, odd, odd[:-1], odd[:-2], [odd[0]] * 40):
        whole, pieces = both(value, DEFAULTS[default])
        assert pieces == whole


def large_values() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    floats = rng.random(400_000).tolist()
    return {
        "floats": floats,
        "records": [{"id": i, "name": f"n{i}", "v": x, "t": (i, None)} for i, x in enumerate(floats[:100_000])],
        "matrix": [floats[i:i + 100] for i in range(0, 300_000, 100)],
        "nested": {"a": floats, 7: {"b": floats[:200_000], "s": 'é"\n' * 300_000}, "i": [2**70] * 50_000},
        "outlier": [1.0] * 1000 + [floats] + [{"x": floats[:100_000]}] + [2.0] * 1000,
        "arrays": [rng.random((600, 500)).astype(np.float32), rng.random((2, 300_000))[:, ::2],
                   rng.integers(0, 9, 400_000)],
        "set": set(range(300_000)),
    }


@pytest.mark.parametrize("name", sorted(large_values()))
def test_large_values_off_the_loop(name):
    """Public ``dumps_json`` in a thread marked as dispatch marks its worker
    threads takes the pieces; the text is the one-shot text."""
    value = large_values()[name]
    got: list[bytes] = []
    pieces: list[int] = []
    real = p._json_piece

    def counting(*args: Any) -> Any:
        pieces.append(1)
        return real(*args)

    p._json_piece = counting  # type: ignore[assignment]
    try:
        t = threading.Thread(target=lambda: (v.encode_in_pieces(), got.append(v.dumps_json(value))))
        t.start()
        t.join()
    finally:
        p._json_piece = real  # type: ignore[assignment]
    assert got[0] == v._dumps_json_whole(value, v._json_default)
    assert len(pieces) > 5  # it was split


def test_each_piece_holds_the_gil_briefly():
    """The longest single orjson call (thread CPU time: the machine's load
    does not count) is a small part of the one-shot call's, for values whose
    JSON is fast (floats) and slow (escaped strings)."""
    real = p._json_piece
    longest = [0.0]

    def timed(*args: Any) -> Any:
        t0 = time.thread_time()
        try:
            return real(*args)
        finally:
            longest[0] = max(longest[0], time.thread_time() - t0)

    floats = np.random.default_rng(1).random(1_000_000).tolist()
    for value in (floats, ['"\\\n\t' * 500 + str(i) for i in range(4000)],
                  # Big items among small ones: cut on their own too (found by a slice's
                  # sample, or, in a short slice of numbers, by every item's type).
                  [floats] + [1.0] * 1000 + [{"x": floats}], [1.0] * 1000 + [floats] + [{"x": floats}]):
        longest[0] = 0.0
        t0 = time.thread_time()
        whole = v._dumps_json_whole(value, v._json_default)
        one_call = time.thread_time() - t0
        p._json_piece = timed  # type: ignore[assignment]
        try:
            assert p.dumps_json(value, v._json_default) == whole
        finally:
            p._json_piece = real  # type: ignore[assignment]
        assert longest[0] < 0.15 * one_call, (longest[0], one_call)


def both_msgpack(value: Any) -> tuple[Any, Any]:
    """(one-shot, pieces) MessagePack: bytes, or the exception's type and message."""
    out = []
    for encode in (v._dumps_msgpack_whole, _pieces_msgpack):
        try:
            out.append(encode(value))
        except Exception as exc:  # noqa: BLE001 - compared, not hidden
            out.append((type(exc), str(exc)))
    return out[0], out[1]


def _pieces_msgpack(value: Any) -> bytes:
    out: list[Any] = []
    p._msgpack_pieces(value, 0, out)
    return b"".join(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values.filter(lambda x: isinstance(x, (list, tuple, dict))))
def test_msgpack_pieces_are_the_one_shot_bytes(tiny_pieces, value):
    whole, pieces = both_msgpack(value)
    if isinstance(whole, bytes):
        assert pieces == whole
    else:  # the one-shot encoder fails: so does a piece, and _dumps_msgpack then raises the one-shot error
        assert not isinstance(pieces, bytes)


@pytest.mark.parametrize("name", ["floats", "records", "matrix", "outlier"])
def test_large_msgpack_off_the_loop(name):
    value = large_values()[name]
    got: list[bytes] = []
    t = threading.Thread(target=lambda: (v.encode_in_pieces(), got.append(v._dumps_msgpack(value))))
    t.start()
    t.join()
    assert got[0] == v._dumps_msgpack_whole(value)
    parts: list[Any] = []
    p._msgpack_pieces(value, 0, parts)
    assert len(parts) > 5


def test_dispatch_threads_encode_in_pieces():
    """Sync handlers and sync generators run (and their results are encoded)
    in threads that take the pieces; other threads keep the one call."""
    reg = Registry()

    @reg.command("where")
    def where(args):
        return {"pieces": v._in_pieces()}

    @reg.command("where_gen")
    def where_gen(args):
        yield {"pieces": v._in_pieces()}

    async def run() -> list[Any]:
        d = Dispatcher(reg)
        try:
            r = await d.call(Request("where", {}))
            chunks = [c async for c in d.stream(Request("where_gen", {}))]
        finally:
            await d.aclose()
        return [r.result["pieces"], chunks[0].data["pieces"], v._in_pieces()]

    assert asyncio.run(run()) == [True, True, False]


def test_long_string_for_a_json_caller_in_pieces():
    """A 0.3 caller's long string result is JSON, in pieces in a worker thread."""
    text = '"\\\n\t' * 300_000 + "é😀"
    pieces: list[int] = []
    real = p._json_piece

    def counting(*args: Any) -> Any:
        pieces.append(1)
        return real(*args)

    got: list[Any] = []
    p._json_piece = counting  # type: ignore[assignment]
    try:
        t = threading.Thread(target=lambda: (v.encode_in_pieces(),
                                             got.append(v.encode_value(text, accept=v.ACCEPT_NONE))))
        t.start()
        t.join()
    finally:
        p._json_piece = real  # type: ignore[assignment]
    assert got[0] == (orjson.dumps(text), "json")
    assert len(pieces) >= 4
