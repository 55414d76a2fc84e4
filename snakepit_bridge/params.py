"""Declared parameters: a handler that says what it takes gets it decoded and checked.

A handler declares its parameters in one of two ways (decided once, when it
is registered; see :func:`declare`):

* a record on ``args``: ``def resize(args: ResizeArgs, ctx)``, where
  ``ResizeArgs`` is a standard-library ``@dataclass`` or a ``msgspec.Struct``;
* keyword-only parameters: ``def resize(ctx, *, width: int, height: int = 0)``
  (``ctx`` may come first or be keyword-only, or be left out; ``**extra``
  takes any other keys as they arrived, undecoded).

Anything else (``def h(args, ctx)``, ``args: dict[str, Any]``) is untyped and
gets the argument dict exactly as before.

Types: ``str``, ``int``, ``float``, ``bool``, ``bytes``, ``None`` and
optionals, ``Literal``, lists, tuples, sets, dicts, nested dataclasses and
Structs, ``Any``, and numpy arrays (``numpy.ndarray`` or
``numpy.typing.NDArray[dtype]``, from npy bytes or nested lists). Bounds and
descriptions: ``Annotated[int, Param(ge=0, description="...")]`` (or
``msgspec.Meta``). Checking is strict: ``"3"`` is not an int, ``1`` is not a
bool; an int is a float.

Over gRPC a parameter declared ``str`` (or a ``Literal`` of strings) keeps
the bytes it received as text when the caller named no encoding: Snakepit's
Elixir client sends strings raw, so ``"123"`` stays ``"123"`` rather than
becoming the number 123 (``str | None``: the bytes ``null`` are None).
``bytes`` keeps the raw bytes. Every other type is decoded as before (JSON,
else text, else bytes) and then checked.

Missing, unknown and ill-typed arguments fail the call with
:class:`~snakepit_bridge.errors.InvalidArgument` listing every problem by
field (``details["errors"]``). Keys a Snakepit 0.3 pool adds on its own
(:data:`RESERVED`: ``session_id``, ``worker_id``, ``initialization``) are
tolerated and dropped unless declared.

Nothing here imports the validation library (msgspec) at registration: the
decoder of a command is built on its first typed call (or describe) and
cached, so a worker imports msgspec only once a typed command is used.
"""
from __future__ import annotations

import base64
import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from .errors import InvalidArgument

__all__ = ["Param", "Params", "RESERVED", "declare"]

#: Argument keys a Snakepit 0.3 pool sends on its own (the session of a
#: GRPCWorker call, the init ping's): tolerated by every typed command.
RESERVED = ("session_id", "worker_id", "initialization")

#: Wire hints (see :func:`snakepit_bridge.codecs.values.decode_map`).
UTF8, RAW, UTF8_OR_NULL, RAW_OR_NULL = "utf8", "raw", "utf8|null", "raw|null"

_MISSING: Any = dataclasses.MISSING
_NONE = type(None)
_lib: Any = None  # msgspec, once a decoder is built


class Param:
    """Bounds and a description for one parameter, in ``Annotated[T, Param(...)]``.

    Standard library only (the built-ins declare with it without importing
    msgspec); the names are msgspec.Meta's, which it becomes when the
    decoder is built."""

    __slots__ = ("description", "ge", "gt", "le", "lt", "min_length", "max_length")

    def __init__(self, description: str | None = None, *, ge: float | None = None, gt: float | None = None,
                 le: float | None = None, lt: float | None = None, min_length: int | None = None,
                 max_length: int | None = None) -> None:
        self.description = description
        self.ge, self.gt, self.le, self.lt = ge, gt, le, lt
        self.min_length, self.max_length = min_length, max_length

    def meta(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}

    def __repr__(self) -> str:
        return "Param(" + ", ".join(f"{k}={v!r}" for k, v in self.meta().items()) + ")"


class Field:
    """One declared parameter (resolved on the command's first use)."""

    __slots__ = ("name", "type", "default", "factory")

    def __init__(self, name: str, type_: Any, default: Any = _MISSING,
                 factory: Callable[[], Any] | None = None) -> None:
        self.name, self.type, self.default, self.factory = name, type_, default, factory

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.factory is None


class Params:
    """What one command declared, and its decoder.

    Registration records only the form (a record class, or keyword
    parameters): reading the fields' types waits for the command's first call
    (or describe), so declaring costs start-up nothing but the signature."""

    def __init__(self, command: str, read_fields: Callable[[], list[Field]], build: Callable[..., Any] | None,
                 title: str, *, open_: bool = False, ctx: str | None = None) -> None:
        self.command = command
        self._read_fields = read_fields
        #: The record class, or None for keyword parameters (``bind`` returns their dict).
        self.build = build
        self.keywords = build is None
        self.open = open_  # keyword form with **extra: other keys pass through
        self.ctx = ctx  # keyword form: "positional", "keyword" or None
        self.title = title
        self.fields: tuple[Field, ...] = ()
        self.names: frozenset[str] = frozenset()
        #: Per-key wire hints for decode_map (how to read bytes that name no
        #: encoding): None until resolved, see :meth:`wire_hints`.
        self.hints: dict[str, str] | None = None
        self._drop: frozenset[str] = frozenset()
        self._bytes: tuple[str, ...] = ()
        self._arrays: tuple[tuple[str, Any], ...] = ()
        self._mirror: Any = None
        self._types: dict[str, Any] = {}
        self._hook: Any = None  # numpy arrays need the decoding hook; passing one costs every call

    def wire_hints(self) -> dict[str, str]:
        return self.hints if self.hints is not None else self._resolve()

    def _resolve(self) -> dict[str, str]:
        fields = tuple(self._read_fields())
        self.fields = fields
        self.names = frozenset(f.name for f in fields)
        self._drop = frozenset(k for k in RESERVED if k not in self.names)
        self._bytes = tuple(f.name for f in fields if _wire_hint(f.type) in (RAW, RAW_OR_NULL))
        self._arrays = tuple((f.name, dt) for f in fields if (dt := _array_dtype(f.type)) is not None)
        self.hints = {f.name: h for f in fields if (h := _wire_hint(f.type)) is not None}
        return self.hints

    # -- decoding ------------------------------------------------------------------

    def bind(self, args: dict[str, Any]) -> Any:
        """The handler's arguments from the decoded ``args``: a record, or the
        keyword dict. Raises :class:`InvalidArgument` listing every problem."""
        mirror = self._mirror or self._build()
        extra = None
        if self.open:
            extra = {k: v for k, v in args.items() if k not in self.names and k != "ctx"}
        elif not self._drop.isdisjoint(args):
            args = {k: v for k, v in args.items() if k not in self._drop}
        if self._bytes:
            args = self._text_to_bytes(args)
        try:
            value = _lib.convert(args, mirror, dec_hook=self._hook)
        except Exception:  # noqa: BLE001 - ValidationError, or a hook's: find every problem
            raise self._invalid(args) from None
        kwargs = _lib.structs.asdict(value)
        if self._arrays:
            self._cast_arrays(kwargs)
        if self.build is None:
            if extra:
                kwargs.update(extra)
            return kwargs
        try:
            return self.build(**kwargs)
        except (TypeError, ValueError) as exc:  # a record's own check (__post_init__) refused them
            raise InvalidArgument(f"invalid arguments for {self.command!r}: {exc}",
                                  details={"errors": {"args": str(exc)}}) from None

    def call(self, func: Callable[..., Any], kwargs: dict[str, Any], ctx: Any) -> Any:
        """Call a keyword-form handler."""
        if self.ctx == "positional":
            return func(ctx, **kwargs)
        if self.ctx == "keyword":
            return func(ctx=ctx, **kwargs)
        return func(**kwargs)

    def _build(self) -> Any:
        global _lib
        import msgspec  # here, not at start-up: only typed calls pay for it

        _lib = msgspec
        if self.hints is None:
            self._resolve()
        spec: list[Any] = []
        for f in self.fields:
            t = _translate(f.type)
            self._types[f.name] = t
            if f.factory is not None:
                spec.append((f.name, t, msgspec.field(default_factory=f.factory)))
            elif f.required:
                spec.append((f.name, t))
            else:
                spec.append((f.name, t, f.default))
        if any(_has_array(t) for t in self._types.values()):
            self._hook = _dec_hook
        self._mirror = msgspec.defstruct(self.title, spec, kw_only=True, forbid_unknown_fields=not self.open)
        return self._mirror

    def _text_to_bytes(self, args: dict[str, Any]) -> dict[str, Any]:
        """JSON frames (stdio) carry bytes as text or ``{"__base64__": ...}``."""
        fixed = None
        for name in self._bytes:
            v = args.get(name)
            if isinstance(v, str) or (isinstance(v, dict) and len(v) == 1 and isinstance(v.get("__base64__"), str)):
                if fixed is None:
                    fixed = dict(args)
                try:
                    fixed[name] = v.encode("utf-8") if isinstance(v, str) else base64.b64decode(v["__base64__"])
                except ValueError:
                    pass  # left as it is: the check reports it
        return args if fixed is None else fixed

    def _cast_arrays(self, kwargs: dict[str, Any]) -> None:
        for name, dtype in self._arrays:
            arr = kwargs.get(name)
            if arr is None or dtype is Any or arr.dtype == dtype:
                continue
            try:
                kwargs[name] = arr.astype(dtype, casting="same_kind")
            except TypeError as exc:
                raise InvalidArgument(f"invalid arguments for {self.command!r}: {name!r}: {exc}",
                                      details={"errors": {name: str(exc)}}) from None

    def _invalid(self, args: dict[str, Any]) -> InvalidArgument:
        problems: dict[str, str] = {}
        for f in self.fields:
            if f.name not in args:
                if f.required:
                    problems[f.name] = "missing (required)"
                continue
            value = args[f.name]
            try:
                _lib.convert(value, self._types[f.name], dec_hook=self._hook)
            except Exception as exc:  # noqa: BLE001
                problems[f.name] = _explain(exc, f.name, value, f.type)
        for key in args:
            if key not in self.names and not self.open and key not in RESERVED:
                problems[str(key)] = "unknown argument"
        if not problems:  # cannot happen; never leave the caller without a reason
            problems["args"] = "invalid"
        text = "; ".join(f"{k!r}: {v}" for k, v in problems.items())
        return InvalidArgument(f"invalid arguments for {self.command!r}: {text}", details={"errors": problems})

    # -- describing ----------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of the args map."""
        mirror = self._mirror or self._build()
        _, components = _lib.json.schema_components([mirror], schema_hook=_schema_hook,
                                                    ref_template="#/$defs/{name}")
        body = dict(components.pop(mirror.__name__))
        body.pop("title", None)
        out: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema", **body}
        if components:
            out["$defs"] = components
        return out


# -- registration -----------------------------------------------------------------------


def declare(command: str, func: Callable[..., Any], sig: inspect.Signature | None = None) -> Params | None:
    """The parameters ``func`` (whose signature is ``sig``) declares, or None
    when it is untyped. Reads only the form: the fields' types are read on
    first use. Raises ``TypeError`` for a form that cannot work (positional
    parameters beside keyword-only ones, a pydantic model)."""
    if sig is None:
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return None
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    keyword = [p for p in params if p.kind is p.KEYWORD_ONLY and p.name != "ctx"]
    if keyword:
        return _keywords(command, func, params, keyword)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional:
        return None
    record = _record_type(positional[0].annotation, func)
    return None if record is None else _record(command, record)


def _globals(func: Callable[..., Any]) -> dict[str, Any]:
    return getattr(inspect.unwrap(func), "__globals__", {})


def _record_type(annotation: Any, func: Callable[..., Any]) -> type | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, _globals(func))  # noqa: S307 - the handler's own annotation
        except Exception:  # noqa: BLE001 - e.g. a TYPE_CHECKING-only name: untyped, as before
            return None
    if not isinstance(annotation, type):
        return None
    if dataclasses.is_dataclass(annotation) or hasattr(annotation, "__struct_fields__"):
        return annotation
    if hasattr(annotation, "model_fields"):
        raise TypeError(f"{annotation.__name__} is a pydantic model; declare parameters with a @dataclass "
                        "or a msgspec.Struct")
    return None


def _record(command: str, cls: type) -> Params:
    def read() -> list[Field]:
        fields: list[Field] = []
        if hasattr(cls, "__struct_fields__"):
            import msgspec  # the handler's module imported it already

            for f in msgspec.structs.fields(cls):
                default = _MISSING if f.default is msgspec.NODEFAULT else f.default
                factory = None if f.default_factory is msgspec.NODEFAULT else f.default_factory
                fields.append(Field(f.name, f.type, default, factory))
            return fields
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"command {command!r}: the annotations of {cls.__name__} do not resolve "
                            f"({type(exc).__name__}: {exc}); define the record at module level") from None
        for dc in dataclasses.fields(cls):
            if dc.init:
                factory = None if dc.default_factory is dataclasses.MISSING else dc.default_factory
                fields.append(Field(dc.name, hints.get(dc.name, Any), dc.default, factory))
        return fields

    return Params(command, read, cls, cls.__name__)


def _keywords(command: str, func: Callable[..., Any], params: list[inspect.Parameter],
              keyword: list[inspect.Parameter]) -> Params:
    ctx = None
    for p in params:
        if p.name == "ctx":
            ctx = "keyword" if p.kind is p.KEYWORD_ONLY else "positional"
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise TypeError(f"command {command!r}: a handler with keyword-only parameters takes nothing "
                            f"else positionally but ctx (got {p.name!r})")

    def read() -> list[Field]:
        fields = []
        for p in keyword:
            annotation = p.annotation
            if annotation is p.empty:
                annotation = Any
            elif isinstance(annotation, str):
                try:
                    annotation = eval(annotation, _globals(func))  # noqa: S307
                except Exception as exc:  # noqa: BLE001
                    raise TypeError(f"command {command!r}: the annotation of {p.name!r} does not resolve "
                                    f"({type(exc).__name__}: {exc})") from None
            fields.append(Field(p.name, annotation, _MISSING if p.default is p.empty else p.default))
        return fields

    title = re.sub(r"\W", "_", command) or "args"
    return Params(command, read, None, title, open_=any(p.kind is p.VAR_KEYWORD for p in params), ctx=ctx)


# -- types -------------------------------------------------------------------------------


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_text(tp: Any) -> bool:
    return tp is str or (get_origin(tp) is Literal and all(isinstance(a, str) for a in get_args(tp)))


def _wire_hint(tp: Any) -> str | None:
    """How a parameter of type ``tp`` reads gRPC bytes that name no encoding."""
    tp = _strip(tp)
    if _is_text(tp):
        return UTF8
    if tp is bytes:
        return RAW
    if _is_union(tp):
        members = [_strip(a) for a in get_args(tp)]
        if len(members) == 2 and _NONE in members:
            other = members[0] if members[1] is _NONE else members[1]
            if _is_text(other):
                return UTF8_OR_NULL
            if other is bytes:
                return RAW_OR_NULL
    return None


def _is_ndarray(tp: Any) -> bool:
    t = get_origin(tp) or tp
    return isinstance(t, type) and t.__name__ == "ndarray" and t.__module__ == "numpy"


def _array_dtype(tp: Any) -> Any:
    """For a top-level array parameter: its declared dtype (``Any``: none); else None."""
    tp = _strip(tp)
    if _is_union(tp):
        members = [a for a in get_args(tp) if a is not _NONE]
        tp = _strip(members[0]) if len(members) == 1 else None
    if not _is_ndarray(tp):
        return None
    args = get_args(tp)
    if len(args) == 2:
        dtype_args = get_args(args[1])
        if dtype_args and dtype_args[0] is not Any and not isinstance(dtype_args[0], typing.TypeVar):
            import numpy as np  # the handler's module imported it already

            return np.dtype(dtype_args[0])
    return Any


def _translate(tp: Any) -> Any:
    """``tp`` as msgspec takes it: Param becomes msgspec.Meta, numpy array aliases the ndarray class."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        base = _translate(base)
        if _is_union(base) and any(isinstance(e, Param) for e in extras):
            # msgspec takes bounds on a union's members (``int | float``), not on the union.
            bounds = [Param(**{k: v for k, v in e.meta().items() if k != "description"})
                      for e in extras if isinstance(e, Param)]
            members = tuple(m if m is _NONE else _translate(Annotated[(m, *_for(m, bounds))])
                            for m in get_args(base))
            base = Union[members]
            extras = [Param(e.description) if isinstance(e, Param) else e for e in extras]
        metas = [_lib.Meta(**e.meta()) if isinstance(e, Param) else e for e in extras]
        return Annotated[(base, *metas)]
    if _is_ndarray(tp):
        return get_origin(tp) or tp
    if origin is None or origin is Literal:
        return tp
    args = get_args(tp)
    new = tuple(a if a is Ellipsis else _translate(a) for a in args)
    if new == args:
        return tp
    if _is_union(tp):
        return Union[new]
    try:
        return origin[new]
    except TypeError:
        return tp


def _for(member: Any, bounds: list[Param]) -> list[Param]:
    """Bounds as an ``int`` member takes them: ``ge=0.005`` is ``ge=1`` for ints."""
    if member is not int:
        return bounds
    out = []
    for b in bounds:
        m = b.meta()
        for k, rounding in (("ge", math.ceil), ("lt", math.ceil), ("le", math.floor), ("gt", math.floor)):
            if k in m:
                m[k] = rounding(m[k])
        out.append(Param(**m))
    return out


def _has_array(tp: Any) -> bool:
    return _is_ndarray(tp) or any(_has_array(a) for a in get_args(tp) if a is not Ellipsis)


def _dec_hook(tp: Any, obj: Any) -> Any:
    if _is_ndarray(tp):
        return _to_array(obj)
    raise NotImplementedError(f"type {tp!r} is not supported")


def _to_array(obj: Any) -> Any:
    import numpy as np

    from .codecs import npy

    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)) and bytes(obj[:6]) == npy.MAGIC:
        return npy.loads(bytes(obj))
    if isinstance(obj, list):
        arr = np.asarray(obj)
        if arr.dtype.hasobject:
            raise ValueError("Expected a numeric array, got a list of mixed values")
        return arr
    raise TypeError(f"Expected `ndarray` (npy bytes or nested lists), got `{type(obj).__name__}`")


def _schema_hook(tp: Any) -> dict[str, Any]:
    if _is_ndarray(tp):
        return {"description": "numpy array: npy bytes (arg_encodings npy) or nested lists of numbers"}
    raise NotImplementedError


def _explain(exc: Exception, name: str, value: Any, tp: Any) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$[1]``` as ``Expected `int`, got `str` (at name[1])``."""
    text = (str(exc) or type(exc).__name__).replace("`array`", "`list`").replace("`object`", "`map`")
    m = re.search(r" - at `\$(.*)`$", text)
    if m is not None:
        text = text[:m.start()]
        if m.group(1):
            return f"{text} (at {name}{m.group(1)})"
    if text.startswith("Invalid enum value") and get_origin(_strip(tp)) is Literal:
        return f"{text}; expected one of {', '.join(map(repr, get_args(_strip(tp))))}"
    if ", got" not in text and isinstance(value, (int, float, str, bytes)) and not isinstance(value, bool):
        text = f"{text}, got {value!r:.60}"
    return text
