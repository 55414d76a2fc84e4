"""``make_payload``: values of any requested size, for tests (``--adapter
tests.handlers_payload``). Not a built-in: a production worker builds nothing
a caller sizes beyond its own request (issue 14)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from snakepit_bridge import command
from snakepit_bridge.params import Param


@command("make_payload")
def make_payload(*, kind: Literal["bytes", "str", "array", "list", "dict"] = "bytes",
                 size: Annotated[int, Param("about this many bytes", ge=0, le=2**31)] = 1024) -> dict[str, Any]:
    """``{"value": v, "kind": kind}`` where ``v`` is about ``size`` bytes of
    ``kind``: bytes (0..255 repeating), str (ASCII), array (float64 numpy,
    i * 0.5), list (of floats), dict (of short strings)."""
    if kind == "bytes":
        value: Any = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    elif kind == "str":
        value = ("0123456789abcdef" * (size // 16 + 1))[:size]
    elif kind == "array":
        import numpy as np

        value = np.arange(size // 8, dtype=np.float64) * 0.5
    elif kind == "list":
        value = [i * 0.5 for i in range(size // 8)]
    else:
        value = {f"k{i}": "v" for i in range(size // 16)}
    return {"value": value, "kind": kind}
