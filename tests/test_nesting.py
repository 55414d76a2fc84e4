"""Arguments nested more than 200 levels deep are refused where they are
decoded (docs/operations.md, "No catastrophic time from arguments"): gRPC
args (JSON, inferred or named, and MessagePack) and stdio frames alike. The
end-to-end check over both transports is in test_faults_hostile.py."""
from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakepit_bridge.codecs import frames, nesting, values
from snakepit_bridge.errors import InvalidArgument


def deep(levels: int, inner: Any = 1) -> Any:
    for _ in range(levels):
        inner = [inner]
    return inner


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


RECORDS = [{"id": i, "tags": ["[x]", "{y}"], "at": {"x": [1, 2]}} for i in range(300)]  # >200 brackets, 3 deep


@pytest.mark.parametrize("encoding", [None, "json", "msgpack"])
def test_args_deeper_than_200_levels_are_invalid_argument(encoding):
    def encode(value):
        return msgpack.packb(value) if encoding == "msgpack" else orjson.dumps(value)

    assert values.decode_value(encode(deep(200)), encoding) == deep(200)
    with pytest.raises(InvalidArgument, match="nested more than 200 levels deep"):
        values.decode_value(encode(deep(201)), encoding)
    # Many brackets (the walk decides), shallow: fine; one deep item among them: refused.
    assert values.decode_value(encode(RECORDS), encoding) == RECORDS
    with pytest.raises(InvalidArgument, match="nested more than 200"):
        values.decode_value(encode([*RECORDS, {"d": deep(199)}]), encoding)
    with pytest.raises(InvalidArgument, match="argument 'x'.*nested more than 200"):
        values.decode_map({"x": encode(deep(201))}, {"x": encoding} if encoding else {})


@pytest.mark.parametrize("codec", [frames.JsonCodec(), frames.MsgpackCodec()], ids=lambda c: c.name)
def test_stdio_frames_refuse_arguments_deeper_than_200_levels(codec):
    def frame(arg):
        obj = {"id": 7, "command": "echo", "args": {"x": arg, "r": RECORDS}}
        return msgpack.packb(obj) if codec.name == "msgpack" else orjson.dumps(obj)

    assert codec.decode(frame(deep(200)))["args"]["x"] == deep(200)
    with pytest.raises(frames.PayloadError, match="nested more than 200 levels deep"):
        codec.decode(frame(deep(201)))
    assert codec.recover_id(frame(deep(201))) == 7  # so the caller gets the error by its id


json_values = st.recursive(
    st.none() | st.integers(-5, 5) | st.text("[]{}a\"", max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text("[{", max_size=2), inner, max_size=3),
    max_leaves=30,
)


@given(json_values, st.integers(0, 6))
def test_the_bracket_bound_and_the_walk_agree_with_the_depth(value, limit):
    data = orjson.dumps(value)
    for check in (lambda: nesting.check_json(data, value, limit), lambda: nesting.check(value, limit)):
        if depth(value) > limit:
            with pytest.raises(InvalidArgument):
                check()
        else:
            assert check() is value
