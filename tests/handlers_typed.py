"""Typed handlers for tests/test_typed.py (``--adapter tests.handlers_typed``).

Importing this module must not import msgspec: declarations are read with
the standard library only (the ``loaded`` probe reports what is imported)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray

from snakepit_bridge import command
from snakepit_bridge.params import Param


@dataclass
class Point:
    x: float
    y: float
    label: str = ""


@dataclass
class EverythingArgs:
    text: str
    count: Annotated[int, Param("how many", ge=0, le=1000)]
    ratio: float = 1.0
    flag: bool = False
    note: str | None = None
    mode: Literal["fast", "slow"] = "fast"
    tags: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    origin: Point | None = None
    blob: bytes = b""
    matrix: NDArray[np.float64] | None = None


def _show(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, Point):
        return {"point": [value.x, value.y, value.label]}
    return value


@command("t_everything")
def everything(args: EverythingArgs) -> dict[str, Any]:
    """Echo every declared parameter with its Python type.

    The rest of the docstring is not part of the description."""
    return {name: {"value": _show(getattr(args, name)), "type": type(getattr(args, name)).__name__}
            for name in EverythingArgs.__dataclass_fields__}


@command("t_keywords")
def keywords(ctx, *, a: int, b: str = "x", **extra: Any) -> dict[str, Any]:
    """Keyword-only parameters; other keys pass through undecoded."""
    return {"a": a, "b": b, "extra": extra, "has_ctx": ctx is not None}


@dataclass
class CountArgs:
    n: Annotated[int, Param(ge=0, le=100)]
    word: str = "tick"


@command("t_typed_stream")
def typed_stream(args: CountArgs, ctx):
    for i in range(args.n):
        yield {"i": i, "word": args.word}


@command("t_untyped")
def untyped(args: dict[str, Any]) -> dict[str, Any]:
    """An untyped handler: the dict as decoded, as before."""
    return {"args": args, "types": {k: type(v).__name__ for k, v in args.items()}}


@command("t_loaded", inline=True)
def loaded(args):
    return {"msgspec": "msgspec" in sys.modules}


@command("t_untyped_options")
def untyped_options(args, ctx, *, verbose=False):
    """Untyped, with a keyword-only option of its own: gets the dict, as before issue 16."""
    return {"args": args, "verbose": verbose, "has_ctx": ctx is not None}


@command("t_untyped_cache")
def untyped_cache(args, *, _cache={}):  # noqa: B006 - the old idiom this must keep serving
    _cache["calls"] = _cache.get("calls", 0) + 1
    return {"args": args, "calls": _cache["calls"]}


@dataclass
class Inner:
    n: Annotated[int, Param("a small count", ge=0, le=10)]
    tag: str = ""


@dataclass
class Outer:
    inner: Inner
    more: list[Inner] = field(default_factory=list)


@command("t_nested")
def nested(args: Outer) -> dict[str, Any]:
    return {"inner": [type(args.inner).__name__, args.inner.n, args.inner.tag],
            "more": [[type(i).__name__, i.n] for i in args.more]}


@command("t_array")
def array(*, a: np.ndarray, mask: NDArray[np.bool_] | None = None) -> dict[str, Any]:
    return {"dtype": str(a.dtype), "mask": None if mask is None else str(mask.dtype)}


@command("t_mixed")
def mixed(*, v: int | str | None = None, w: str | list[str] = "") -> dict[str, Any]:
    """str unions: Elixir's raw text is the str member unless it is a JSON list or map."""
    return {"v": v, "v_type": type(v).__name__, "w": w}
