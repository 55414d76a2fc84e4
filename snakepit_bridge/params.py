"""Declared parameters: a handler that says what it takes gets it decoded and checked.

A handler declares its parameters in one of two ways (decided once, when it
is registered; see :func:`declare`):

* a record on ``args``: ``def resize(args: ResizeArgs, ctx)``, where
  ``ResizeArgs`` is a standard-library ``@dataclass`` or a ``msgspec.Struct``;
* keyword-only parameters: ``def resize(ctx, *, width: int, height: int = 0)``
  (``ctx`` may come first or be keyword-only, or be left out; ``**extra``
  takes any other keys as they arrived, undecoded).

Anything else (``def h(args, ctx)``, ``args: dict[str, Any]``) is untyped and
gets the argument dict exactly as before, also with keyword-only options of
its own that have defaults (``def h(args, ctx, *, verbose=False)``).

Types: ``str``, ``int``, ``float``, ``bool``, ``bytes``, ``None`` and
optionals, ``Literal``, lists, tuples, sets, dicts, nested dataclasses and
Structs, ``Any``, and numpy arrays (``numpy.ndarray`` or
``numpy.typing.NDArray[dtype]``, from npy bytes or nested lists). Bounds and
descriptions: ``Annotated[int, Param(ge=0, description="...")]`` (or
``msgspec.Meta``). Checking is strict: ``"3"`` is not an int, ``1`` is not a
bool; an int is a float. Nested records are checked like the command's own
parameters (through mirror Structs: bounds, unknown fields, schema).

Over gRPC a parameter declared ``str`` (or a ``Literal`` of strings) keeps
the bytes it received as text when the caller named no encoding: Snakepit's
Elixir client sends strings raw, so ``"123"`` stays ``"123"`` rather than
becoming the number 123 (``str | None``: the bytes ``null`` are None).
``bytes`` keeps the raw bytes. A type mixing str with others (``str |
list[str]``) reads the bytes as JSON only if they are a JSON list or map,
else as text. Every other type is decoded as before (JSON, else text, else
bytes) and then checked.

Missing, unknown and ill-typed arguments fail the call with
:class:`~snakepit_bridge.errors.InvalidArgument` listing every problem by
field (``details["errors"]``, at most :data:`MAX_LISTED`). Unknown keys
follow the declaration's ``extra`` policy (:data:`EXTRA`): ``"forbid"``
(the default) or ``"ignore"`` (the built-ins: Snakepit 0.3 ignored them).
Keys a Snakepit 0.3 pool adds on its own (:data:`RESERVED`: ``session_id``,
``worker_id``, ``initialization``) are tolerated and dropped unless declared.
A default its own declaration refuses fails the first build (a TypeError
naming the command and field).

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
import threading
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from .errors import InvalidArgument

__all__ = ["EXTRA", "Param", "Params", "RESERVED", "declare"]

#: Argument keys a Snakepit 0.3 pool sends on its own (the session of a
#: GRPCWorker call, the init ping's): tolerated by every typed command.
RESERVED = ("session_id", "worker_id", "initialization")

#: Policies for undeclared argument keys (``@command(..., extra=...)``).
EXTRA = ("forbid", "ignore")

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
                 title: str, *, open_: bool = False, ctx: str | None = None, extra: str = "forbid") -> None:
        self.command = command
        self._read_fields = read_fields
        #: The record class, or None for keyword parameters (``bind`` returns their dict).
        self.build = build
        self.keywords = build is None
        self.open = open_  # keyword form with **extra: other keys pass through
        self.ctx = ctx  # keyword form: "positional", "keyword" or None
        #: Undeclared keys: "forbid" (INVALID_ARGUMENT) or "ignore" (dropped); see :func:`declare`.
        self.extra = extra
        self.title = title
        self.fields: tuple[Field, ...] = ()
        self.names: frozenset[str] = frozenset()
        #: Per-key wire hints for decode_map (how to read bytes that name no
        #: encoding): None until resolved, see :meth:`wire_hints`.
        self.hints: dict[str, str] | None = None
        self._drop: frozenset[str] = frozenset()
        self._bytes: tuple[str, ...] = ()
        self._mixed: tuple[str, ...] = ()  # str and other types: raw bytes read by _text_or_container
        self._arrays: tuple[tuple[str, Any], ...] = ()
        self._records: tuple[str, ...] = ()  # fields holding nested records: rebuilt from their mirrors
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
        self._mixed = tuple(f.name for f in fields if _is_mixed(f.type))
        self._bytes = tuple(f.name for f in fields if _wire_hint(f.type) in (RAW, RAW_OR_NULL))
        self._arrays = tuple((f.name, dt) for f in fields if (dt := _array_dtype(f.type)) is not None)
        hints = {f.name: h for f in fields if (h := _wire_hint(f.type)) is not None}
        for f in fields:
            if f.name in self._mixed:
                hints[f.name] = RAW_OR_NULL if _NONE in _members(f.type) else RAW
        self.hints = hints
        return hints

    # -- decoding ------------------------------------------------------------------

    def bind(self, args: dict[str, Any]) -> Any:
        """The handler's arguments from the decoded ``args``: a record, or the
        keyword dict. Raises :class:`InvalidArgument` listing every problem."""
        mirror = self._mirror or self._build()
        extra = None
        if self.open:
            extra = {k: v for k, v in args.items() if k not in self.names and k != "ctx"}
        elif self.extra == "ignore":
            if not self.names.issuperset(args):
                args = self._ignore_unknown(args)
        elif not self._drop.isdisjoint(args):
            args = {k: v for k, v in args.items() if k not in self._drop}
        if self._bytes:
            args = self._text_to_bytes(args)
        if self._mixed:
            args = self._text_or_container(args)
        try:
            value = _lib.convert(args, mirror, dec_hook=self._hook)
        except Exception:  # noqa: BLE001 - ValidationError, or a hook's: find every problem
            raise self._invalid(args) from None
        kwargs = _lib.structs.asdict(value)
        if self._arrays:
            self._cast_arrays(kwargs)
        try:
            for name in self._records:
                kwargs[name] = _restore(kwargs[name])
            if self.build is None:
                if extra:
                    kwargs.update(extra)
                return kwargs
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
        with _BUILDING_LOCK:
            if self._mirror is not None:
                return self._mirror
            if self.hints is None:
                self._resolve()
            forbid = self.extra == "forbid"  # in nested records too; **extra opens the top level only
            spec, types_ = _spec(self.command, None, self.fields, forbid)
            if any(_has_array(t) for t in types_.values()):
                self._hook = _dec_hook
            self._records = tuple(name for name, t in types_.items() if _has_record(t))
            self._types = types_
            self._mirror = msgspec.defstruct(self.title, spec, kw_only=True,
                                             forbid_unknown_fields=forbid and not self.open)
            return self._mirror

    def _ignore_unknown(self, args: dict[str, Any]) -> dict[str, Any]:
        unknown = [k for k in args if k not in self.names and k not in RESERVED]
        if unknown:
            from .logging import get_logger

            get_logger("snakepit_bridge.params").debug("unknown arguments ignored", command=self.command,
                                                       keys=[str(k)[:100] for k in unknown[:MAX_LISTED]],
                                                       count=len(unknown))
        return {k: v for k, v in args.items() if k in self.names}

    def _text_to_bytes(self, args: dict[str, Any]) -> dict[str, Any]:
        """JSON frames (stdio) carry bytes as text or ``{"__base64__": ...}``."""
        fixed = None
        for name in self._bytes:
            v = args.get(name)
            if isinstance(v, str) or (isinstance(v, dict) and len(v) == 1 and isinstance(v.get("__base64__"), str)):
                if fixed is None:
                    fixed = dict(args)
                if isinstance(v, str):
                    fixed[name] = v.encode("utf-8", "surrogatepass")
                    continue
                try:
                    fixed[name] = base64.b64decode(v["__base64__"], validate=True)
                except ValueError as exc:
                    fixed[name] = _Refused(f"invalid base64 in __base64__ ({exc})")
        return args if fixed is None else fixed

    def _text_or_container(self, args: dict[str, Any]) -> dict[str, Any]:
        """Raw bytes of a parameter whose type mixes str with other types (see
        :func:`_str_or_container`)."""
        fixed = None
        for name in self._mixed:
            v = args.get(name)
            if isinstance(v, (bytes, bytearray, memoryview)):
                if fixed is None:
                    fixed = dict(args)
                fixed[name] = _str_or_container(bytes(v))
        return args if fixed is None else fixed

    def _cast_arrays(self, kwargs: dict[str, Any]) -> None:
        for name, dtype in self._arrays:
            arr = kwargs.get(name)
            if arr is None or (dtype is not Any and arr.dtype == dtype):
                continue
            try:
                if arr.dtype.kind == "b":  # booleans only where the declaration says so
                    raise TypeError(f"Expected a numeric array, got dtype bool"
                                    f"{'' if dtype is Any else f'; expected {dtype}'}")
                if dtype is not Any:
                    kwargs[name] = arr.astype(dtype, casting="same_kind")
            except TypeError as exc:
                raise InvalidArgument(f"invalid arguments for {self.command!r}: {name!r}: {exc}",
                                      details={"errors": {name: str(exc)}}) from None

    def _invalid(self, args: dict[str, Any]) -> InvalidArgument:
        problems: dict[str, str] = {}
        count = 0

        def add(key: str, problem: str) -> None:
            nonlocal count
            count += 1
            if count <= MAX_LISTED:
                problems[key if len(key) <= 100 else key[:100] + "..."] = problem

        for f in self.fields:
            if f.name not in args:
                if f.required:
                    add(f.name, "missing (required)")
                continue
            value = args[f.name]
            if isinstance(value, _Refused):
                add(f.name, value.reason)
                continue
            try:
                _lib.convert(value, self._types[f.name], dec_hook=self._hook)
            except Exception as exc:  # noqa: BLE001
                add(f.name, _explain(exc, f.name, value, f.type))
        if not self.open and self.extra == "forbid":
            for key in args:
                if key not in self.names and key not in RESERVED:
                    add(str(key), "unknown argument")
        if not problems:  # cannot happen; never leave the caller without a reason
            add("args", "invalid")
        text = "; ".join(f"{k!r}: {v}" for k, v in problems.items())
        details: dict[str, Any] = {"errors": problems}
        if count > len(problems):
            details["more_errors"] = count - len(problems)
            text += f"; and {count - len(problems)} more"
        return InvalidArgument(f"invalid arguments for {self.command!r}: {text}", details=details)

    # -- describing ----------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of the args map."""
        mirror = self._mirror or self._build()
        (ref,), components = _lib.json.schema_components([mirror], schema_hook=_schema_hook,
                                                         ref_template="#/$defs/{name}")
        # the component's name is the title unless a nested record has the same name
        body = dict(components.pop(ref["$ref"].rsplit("/", 1)[1]))
        body.pop("title", None)
        out: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema", **body}
        if components:
            out["$defs"] = components
        return out


#: At most this many problems are listed in an error (the rest are counted).
MAX_LISTED = 20


class _Refused:
    """A value refused before the check (bad base64): the check lists its reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


# -- mirrors: what msgspec checks, records' fields translated --------------------------------

_BUILDING_LOCK = threading.RLock()
_MIRRORS: dict[tuple[type, bool], Any] = {}  # (record class, forbid unknown fields) -> its mirror Struct
_ORIGINALS: dict[Any, type] = {}  # mirror -> record class
_IN_PROGRESS: set[tuple[type, bool]] = set()


def _spec(command: str, owner: str | None, fields: tuple[Field, ...] | list[Field],
          forbid: bool) -> tuple[list[Any], dict[str, Any]]:
    """defstruct's field spec for ``fields`` (of record ``owner``; None: the
    command's own), their translated types; refuses a default its own
    declaration does not accept."""
    spec: list[Any] = []
    types_: dict[str, Any] = {}
    for f in fields:
        t = _translate(f.type, command, forbid)
        types_[f.name] = t
        if f.factory is not None:
            spec.append((f.name, t, _lib.field(default_factory=f.factory)))
        elif f.required:
            spec.append((f.name, t))
        else:
            try:
                _lib.convert(f.default, t, dec_hook=_dec_hook, from_attributes=True)
            except Exception as exc:  # noqa: BLE001
                where = f.name if owner is None else f"{owner}.{f.name}"
                raise TypeError(f"command {command!r}: the default of {where!r} ({f.default!r:.60}) does not "
                                f"satisfy its own declaration: {_explain(exc, f.name, f.default, f.type)}") from None
            spec.append((f.name, t, f.default))
    return spec, types_


def _mirror_of(cls: type, command: str, forbid: bool) -> Any:
    """A Struct that checks what record ``cls`` declares (Param bounds, unknown
    fields) as a command's own parameters are checked; :func:`_restore` turns
    its instances back into ``cls``."""
    key = (cls, forbid)
    mirror = _MIRRORS.get(key)
    if mirror is not None:
        return mirror
    if key in _IN_PROGRESS:
        return cls  # a record holding itself: msgspec reads it below this level
    _IN_PROGRESS.add(key)
    try:
        spec, _ = _spec(command, cls.__name__, _record_fields(command, cls), forbid)
    finally:
        _IN_PROGRESS.discard(key)
    mirror = _lib.defstruct(cls.__name__, spec, kw_only=True, forbid_unknown_fields=forbid,
                            module=getattr(cls, "__module__", None))
    _MIRRORS[key] = mirror
    _ORIGINALS[mirror] = cls
    return mirror


def _has_record(tp: Any) -> bool:
    if isinstance(tp, type):
        return tp in _ORIGINALS
    return any(_has_record(a) for a in get_args(tp) if isinstance(a, type) or get_args(a))


def _restore(value: Any) -> Any:
    """``value`` with every mirror instance turned back into its record class."""
    cls = _ORIGINALS.get(type(value))
    if cls is not None:
        return cls(**{name: _restore(getattr(value, name)) for name in value.__struct_fields__})
    if type(value) is list:
        return [_restore(v) for v in value]
    if type(value) is tuple:
        return tuple(_restore(v) for v in value)
    if type(value) is dict:
        return {k: _restore(v) for k, v in value.items()}
    return value


# -- registration -----------------------------------------------------------------------


def declare(command: str, func: Callable[..., Any], sig: inspect.Signature | None = None, *,
            extra: str = "forbid") -> Params | None:
    """The parameters ``func`` (whose signature is ``sig``) declares, or None
    when it is untyped. Reads only the form: the fields' types are read on
    first use. ``extra`` is the policy for undeclared keys: ``"forbid"`` (an
    unknown argument is an INVALID_ARGUMENT) or ``"ignore"`` (dropped, logged
    at debug). Raises ``TypeError`` for a form that cannot work (positional
    parameters beside required keyword-only ones, keyword-only parameters
    beside ``*args``, a pydantic model)."""
    if extra not in EXTRA:
        raise ValueError(f"command {command!r}: extra must be one of {', '.join(map(repr, EXTRA))}, got {extra!r}")
    if sig is None:
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return None
    params = list(sig.parameters.values())
    keyword = [p for p in params if p.kind is p.KEYWORD_ONLY and p.name != "ctx"]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        declared = [p.name for p in keyword if p.default is p.empty or p.annotation is not p.empty]
        if declared:
            raise TypeError(f"command {command!r}: a handler with *args cannot declare keyword-only parameters "
                            f"(got {', '.join(map(repr, declared))}); drop *args to declare them")
        return None  # untyped, called (args, ctx) as before
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if positional and positional[0].name != "ctx":
        # The (args[, ctx]) form: a record on args, or untyped. Keyword-only
        # parameters with defaults are the handler's own business (options, caches).
        required = [p.name for p in keyword if p.default is p.empty]
        if required:
            raise TypeError(f"command {command!r}: a handler with keyword-only parameters takes nothing else "
                            f"positionally but ctx (got {positional[0].name!r}); give "
                            f"{', '.join(map(repr, required))} a default, or declare every parameter keyword-only")
        record = _record_type(positional[0].annotation, func)
        return None if record is None else _record(command, record, extra)
    if keyword:
        return _keywords(command, func, params, keyword, extra)
    return None


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


def _record(command: str, cls: type, extra: str) -> Params:
    return Params(command, lambda: _record_fields(command, cls), cls, cls.__name__, extra=extra)


def _is_record(tp: Any) -> bool:
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or hasattr(tp, "__struct_fields__"))


def _record_fields(command: str, cls: type) -> list[Field]:
    """The fields of a dataclass or Struct (a command's record, or one nested in it)."""
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


def _keywords(command: str, func: Callable[..., Any], params: list[inspect.Parameter],
              keyword: list[inspect.Parameter], extra: str) -> Params:
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
                    annotation = eval(annotation, _globals(func))  # noqa: S307 - the handler's own annotation
                except Exception as exc:  # noqa: BLE001 - any failure to resolve is reported as such
                    raise TypeError(f"command {command!r}: the annotation of {p.name!r} does not resolve "
                                    f"({type(exc).__name__}: {exc})") from None
            fields.append(Field(p.name, annotation, _MISSING if p.default is p.empty else p.default))
        return fields

    title = re.sub(r"\W", "_", command) or "args"
    return Params(command, read, None, title, open_=any(p.kind is p.VAR_KEYWORD for p in params), ctx=ctx,
                  extra=extra)


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


def _is_mixed(tp: Any) -> bool:
    """A union of str (or a Literal of strings) with other types but bytes."""
    members = [m for m in _members(tp) if m is not _NONE]
    return (len(members) > 1 and any(_is_text(m) for m in members) and bytes not in members
            and any(not _is_text(m) for m in members))


def _members(tp: Any) -> list[Any]:
    """The members of a union, nested unions and Annotated unwrapped (``[tp]`` if no union)."""
    tp = _strip(tp)
    if not _is_union(tp):
        return [tp]
    return [m for a in get_args(tp) for m in _members(a)]


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


def _translate(tp: Any, command: str = "", forbid: bool = True) -> Any:
    """``tp`` as msgspec takes it: Param becomes msgspec.Meta, numpy array
    aliases the ndarray class, a nested record its mirror (see :func:`_mirror_of`)."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        base = _translate(base, command, forbid)
        if _is_union(base) and any(isinstance(e, Param) for e in extras):
            # msgspec takes bounds on a union's members (``int | float``), not on the union.
            bounds = [Param(**{k: v for k, v in e.meta().items() if k != "description"})
                      for e in extras if isinstance(e, Param)]
            members = tuple(m if m is _NONE else _translate(Annotated[(m, *_for(m, bounds))], command, forbid)
                            for m in get_args(base))
            base = Union[members]
            extras = [Param(e.description) if isinstance(e, Param) else e for e in extras]
        metas = [_lib.Meta(**e.meta()) if isinstance(e, Param) else e for e in extras]
        return Annotated[(base, *metas)]
    if _is_ndarray(tp):
        return get_origin(tp) or tp
    if _is_record(tp):
        return _mirror_of(tp, command, forbid)
    if origin is None or origin is Literal:
        return tp
    args = get_args(tp)
    new = tuple(a if a is Ellipsis else _translate(a, command, forbid) for a in args)
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
    if _is_ndarray(tp):
        return True
    if isinstance(tp, type) and tp in _ORIGINALS:
        return any(_has_array(f.type) for f in _lib.structs.fields(tp))
    if _is_record(tp):
        return True  # a record holding itself, which msgspec reads: it may hold arrays
    return any(_has_array(a) for a in get_args(tp) if a is not Ellipsis)


def _dec_hook(tp: Any, obj: Any) -> Any:
    if _is_ndarray(tp):
        return _to_array(obj)
    raise NotImplementedError(f"type {tp!r} is not supported")


def _to_array(obj: Any) -> Any:
    import numpy as np

    from .codecs import npy

    if isinstance(obj, np.ndarray):
        arr = obj
    elif isinstance(obj, (bytes, bytearray, memoryview)) and bytes(obj[:6]) == npy.MAGIC:
        arr = npy.loads(bytes(obj))
    elif isinstance(obj, list):
        arr = np.asarray(obj)
        if arr.dtype.hasobject:
            raise ValueError("Expected a numeric array, got a list of mixed values")
    else:
        raise TypeError(f"Expected `ndarray` (npy bytes or nested lists), got `{type(obj).__name__}`")
    if arr.dtype.kind not in "biufc":  # bool is refused later unless declared (Params._cast_arrays)
        raise ValueError(f"Expected a numeric array, got dtype {arr.dtype}")
    return arr


def _str_or_container(data: bytes) -> Any:
    """Raw gRPC bytes of a parameter whose type mixes str with other types
    (``str | list[str]``): JSON when they are a JSON list or map, else the
    text they are (Elixir's "404" stays "404"; not UTF-8: the bytes)."""
    try:
        text = str(data, "utf-8")
    except UnicodeDecodeError:
        return data
    if text.lstrip()[:1] in ("[", "{"):
        from .codecs.values import loads_json

        try:
            return loads_json(data)
        except ValueError:
            pass
    return text


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
