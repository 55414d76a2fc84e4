"""Encoding of single values in ``args``, ``result`` and ``chunk`` maps.

Outgoing (result and chunk values), each value on its own
(:func:`encode_value`, threshold ``T`` = ``--binary-threshold``, default 10,240),
for a caller that accepts the binary encodings ``accept`` (the request's
``accept_encodings``; see :func:`accepted`):

* ``bytes``-like: raw bytes at any size (encoding ``raw``), whatever ``accept`` says.
* scalars (None, bool, int, float, numpy scalars): always JSON (numpy complex
  scalars, which JSON cannot carry, go as 0-d ``npy``).
* everything else goes as JSON (orjson) when its JSON text is at most ``T``
  bytes, or when the encoding it would take is not in ``accept``; else as
  binary: ``str`` as raw UTF-8 (``utf8``), numpy arrays as ``.npy`` (``npy``),
  dicts/lists/tuples/sets as MessagePack (``msgpack``).
  The size is never measured by encoding a big value as JSON and throwing it
  away: a cheap walk bounds the JSON text from below (every item is at least
  one byte, every string its length plus quotes) and stops as soon as that
  bound passes ``T``; only values that might fit are JSON-encoded and measured.
  (The walk also stops after 65,536 items; only with thresholds far above the
  default can a big structure then be JSON-encoded once just to be measured.)
  So ``T = 0`` sends every non-scalar binary that ``accept`` allows.
* a value JSON cannot carry: complex arrays go as npy at any size (whatever
  ``accept`` says: JSON has no form for them); a structure holding bytes goes
  as MessagePack at any size when ``msgpack`` is accepted, else as JSON with
  each bytes value as its UTF-8 text, or ``{"__base64__": "..."}`` when it is
  not UTF-8 (the stdio JSON frames' rule). A structure MessagePack cannot
  carry (an int beyond 64 bits) stays JSON at any size.

Off the event loop (in dispatch's worker threads), a value whose JSON may
pass ~256 KiB is encoded in pieces (:mod:`.pieces`), the same bytes as one
call (:func:`dumps_json`, :func:`_dumps_msgpack`): orjson and msgpack hold
the GIL for a whole call, which would stall the loop thread for all of it.

With ``accept`` empty (a caller that names no encodings, as Snakepit 0.3's
Elixir client) every value but bytes and complex arrays is JSON at any size:
what Snakepit 0.3's own bridge sent. JSON values carry no entry in the
``encodings`` map, so a client that ignores the map decodes them as before.

What each encoding carries:

* JSON has no NaN or infinity: they become ``null``. Ints of any size travel
  (beyond 64 bits spliced in as written, beyond 4,300 digits too); Python
  decodes them exactly in JSON texts up to 16 KiB (:func:`loads_json`) and as
  floats above (orjson; the digit scan that catches them costs too much on
  big texts; above ~1e308 such a text does not decode at all). Elixir's Jason
  decodes them exactly. Tuples and sets become lists; non-string dict keys
  become strings.
* MessagePack carries NaN/inf, bytes (bin) and int keys; ints beyond the
  64-bit range cannot travel (such a structure falls back to JSON). numpy
  arrays inside a structure become nested lists (``tolist()``).
* npy carries every numeric dtype (bool, ints, uints, float16..64,
  complex64/128), any shape and Fortran order; never object arrays (pickle).
  Decoded arrays are read-only views over the message bytes (no copy).

Incoming (args, :func:`decode_value`): with an ``arg_encodings`` entry, that
encoding (``json``, ``utf8``, ``raw``, ``npy``, ``msgpack``); without one,
CONTRACT.md §3: valid JSON is decoded as JSON, else valid UTF-8 as a string,
else the raw bytes. So the string ``"123"`` sent by Snakepit 0.3's Elixir
client arrives as the number 123, and ``"true"`` as True: Elixir sends strings
raw and everything else as JSON, and the bytes cannot tell the two apart. A
client that means the string sends ``arg_encodings={"key": "utf8"}`` (our
:class:`~snakepit_bridge.client.Client` always does). A value its encoding
cannot decode is an :class:`~snakepit_bridge.errors.InvalidArgument` naming
the argument.

Speed (quick measurements on the shared 2-core dev box, best of several
runs; the permanent benchmark lives in ``benchmarks/``), encode + decode of
one value, list = Python list of floats, arr = float64 numpy array:

=========  ==========  =========  ==========  =========  ========  ==========
size       JSON list   JSON arr   msgpack     npy        raw       utf8
=========  ==========  =========  ==========  =========  ========  ==========
1 KB       0.02 ms     0.03 ms    <0.01 ms    0.03 ms    0         <0.01 ms
1 MB       3.8 ms      2.7 ms     4.6 ms      0.07 ms    0         0.08 ms
10 MB      63 ms       75 ms      90 ms       0.75 ms    0         1.5 ms
100 MB     1.4 s       1.4 s      1.5 s       71 ms      0         0.2-0.5 s
=========  ==========  =========  ==========  =========  ========  ==========

(npy at 100 MB is page faults on a fresh 100 MB buffer; decode is ~0.2 ms.)

Echo through the bridge (``echo_payload``, request pre-encoded) vs a bare
grpcio servicer handing ``args`` back: 1 MB 0.9-1.1x, 10 MB 1.0-1.2x,
100 MB 1.0-1.5x of the bare time (~90 ms at 10 MB, ~1 s at 100 MB: gRPC
itself dominates). End to end with the Python client, a 1 MB float64 array
echoes in ~4 ms as npy vs ~31 ms as JSON everything (8x); as a Python list
of floats, MessagePack is only ~2x faster than JSON (list building dominates).

Copies of a 100 MB numpy array, user space (kernel socket copies aside;
grpcio 1.85 without its zero-copy experiment, protobuf upb):

* out (handler -> wire): npy bytes 1 (header and ``arr.data`` joined straight
  into one ``bytes``; ``np.save`` into BytesIO took 2-3), into the protobuf
  message 1, ``SerializeToString`` 2 (it takes two copies' time: upb encodes
  into its arena, then into a Python ``bytes``), grpc's send slice 1
  (``grpc_slice_from_copied_buffer``): 5. A bare servicer returning the
  request's map makes 4 (no npy step).
* in (wire -> handler): grpc's received slices to ``bytes`` 2 (one per slice,
  then ``b"".join``), protobuf parse 1, reading the map entry out of the
  message 1 (every read copies: read it once), npy decode 0
  (``np.frombuffer``; ``np.load`` copied once more): 4. The bare servicer
  makes 3 (it copies the map message to message, not out to Python).

So the bridge adds one copy each way over the bare servicer; the rest is
grpcio and protobuf, which a custom (de)serializer could cut (server.py
registers the generated handlers, so that is not done here).
"""
from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from .._lazy import lazy_module
from ..errors import InvalidArgument
from . import nesting, npy

if TYPE_CHECKING:
    import msgpack
else:
    msgpack = lazy_module("msgpack")  # on first use (see codecs/frames.py)

__all__ = [
    "ACCEPT_ALL", "ACCEPT_NONE", "BINARY_ENCODINGS", "DEFAULT_THRESHOLD", "ENCODINGS", "JSON", "MSGPACK", "NPY",
    "RAW", "UTF8", "accepted", "decode_map", "decode_value", "dumps_json", "encode_map", "encode_value",
    "encode_in_pieces", "json_costly", "json_exceeds", "loads_json",
]

JSON, UTF8, RAW, NPY, MSGPACK = "json", "utf8", "raw", "npy", "msgpack"
ENCODINGS = (JSON, UTF8, RAW, NPY, MSGPACK)
#: The binary encodings a caller can accept (``accept_encodings``), in the order docs list them.
BINARY_ENCODINGS = (NPY, RAW, UTF8, MSGPACK)
ACCEPT_ALL: frozenset[str] = frozenset(BINARY_ENCODINGS)
ACCEPT_NONE: frozenset[str] = frozenset()
DEFAULT_THRESHOLD = 10_240

_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_BYTES_TYPES = (bytes, bytearray, memoryview)
_SCALARS = (type(None), bool, int, float)
_SCALAR_TYPES = frozenset(_SCALARS)

# orjson decodes ints beyond 64 bits as floats; the stdlib keeps them exact.
# Looking for 19-digit runs costs ~1 ns/byte; only texts up to this size get it.
_BIG_INT_SCAN_LIMIT = 16_384
_WALK_LIMIT = 65_536  # items json_exceeds looks at before it gives up (~1 ms)
# A 19-digit run (-2**63 - 1 has 19 digits), looked for as "0" * 19 in the text
# with every digit made "0" (a third of a regex search's cost on a small frame).
_DIGITS_19 = b"0" * 19
_DIGITS_AS_0 = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_INT64 = (-(2**63), 2**64 - 1)  # what orjson writes itself
# Python refuses str<->int beyond this many digits (sys.get_int_max_str_digits,
# a guard against quadratic conversion); longer ints are converted in parts.
_DIGIT_PART = 4000
# Characters of a string encoded in one piece (~2 ms when every one is escaped):
# a longer one, for a caller that takes no utf8, may go in pieces (.pieces).
_STR_PIECE = 1 << 18


def accepted(names: Any) -> frozenset[str]:
    """The binary encodings among ``names`` (a request's ``accept_encodings``).
    Unknown names are ignored (a newer client may know more), and ``json``
    names nothing binary: ``["json"]`` asks for JSON everything."""
    return ACCEPT_ALL.intersection(names)


class _NotJSON(Exception):
    """The value cannot be JSON at all (e.g. it holds bytes)."""


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if npy.is_ndarray(obj) or _is_numpy_scalar(obj):
        _npy_check(obj)
        value = obj.tolist()
        if isinstance(value, complex) or (isinstance(value, list) and obj.dtype.kind == "c"):
            raise TypeError("complex numbers have no JSON form")
        return value
    raise TypeError(f"values of type {type(obj).__name__} cannot be encoded")


def _json_default_text(obj: Any) -> Any:
    """As :func:`_json_default`, and bytes as text (the stdio JSON frames' rule)."""
    if isinstance(obj, _BYTES_TYPES):
        data = bytes(obj)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"__base64__": base64.b64encode(data).decode("ascii")}
    return _json_default(obj)


def _msgpack_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, int):
        raise TypeError(f"MessagePack cannot carry ints beyond 64 bits ({str(obj)[:24]}...)")
    if npy.is_ndarray(obj) or _is_numpy_scalar(obj):
        _npy_check(obj)
        return obj.tolist()
    raise TypeError(f"values of type {type(obj).__name__} cannot be encoded")


def _npy_check(obj: Any) -> None:
    if obj.dtype.hasobject:
        raise TypeError(f"numpy values of dtype {obj.dtype} hold Python objects, which only pickle can carry")


def _is_numpy_scalar(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0


def _finite(value: Any) -> Any:
    """``value`` with NaN/inf replaced by None, as orjson does (stdlib fallback only)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_finite(v) for v in value]
    return value


def _int_text(n: int) -> bytes:
    """Decimal digits of ``n``, also beyond Python's 4,300-digit str() limit."""
    try:
        return str(n).encode()
    except ValueError:
        pass
    sign, n = ("-" if n < 0 else ""), abs(n)
    parts = []
    while n:
        n, part = divmod(n, 10**_DIGIT_PART)
        parts.append(part)
    head = str(parts.pop())
    return (sign + head + "".join(f"{part:0{_DIGIT_PART}d}" for part in reversed(parts))).encode()


def _parse_int(text: str) -> int:
    """``int(text)``, also beyond Python's 4,300-digit limit (json.loads' ``parse_int``)."""
    if len(text) <= _DIGIT_PART:
        return int(text)
    sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text)
    n = 0
    for i in range(0, len(digits), _DIGIT_PART):
        part = digits[i:i + _DIGIT_PART]
        n = n * 10**len(part) + int(part)
    return sign * n


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads would take NaN/Infinity; orjson does not


def _big_ints_spliced(value: Any) -> Any:
    """``value`` with ints beyond 64 bits as :class:`orjson.Fragment` (their
    digits, written as they are) and tuples/sets as lists: what orjson can then encode."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _INT64[0] <= value <= _INT64[1] else orjson.Fragment(_int_text(value))
    if isinstance(value, dict):
        return {k: _big_ints_spliced(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_big_ints_spliced(v) for v in value]
    return value


def dumps_json(value: Any, default: Any = None) -> bytes:
    """JSON text via orjson; ints beyond 64 bits (any length) spliced in
    exactly; nesting deeper than orjson takes via the stdlib. ``default``:
    as orjson's (for values neither encoder knows). Raises ``TypeError`` or
    ``ValueError`` for a value JSON cannot carry.

    In dispatch's worker threads (:func:`encode_in_pieces`), a value whose
    JSON may pass ~256 KiB is encoded in pieces of about that size
    (:mod:`.pieces`), byte for byte the same text: orjson holds the GIL for
    a whole call, so one call over 10 MB would stall the loop thread (Health
    and every other call) for all of its tens of ms."""
    default = default or _json_default
    if type(value) not in _SCALAR_TYPES and _in_pieces():
        from .pieces import dumps_json as in_pieces  # it builds on this module's one-call encoders

        return in_pieces(value, default)
    return _dumps_json_whole(value, default)


class _ThreadFlags(threading.local):
    pieces = False  # a class default: no AttributeError raised and caught per call


_THREAD = _ThreadFlags()


def encode_in_pieces() -> None:
    """Have this thread encode large values in pieces (:func:`dumps_json`):
    dispatch's worker threads call it first (their executors' initializer),
    so the event loop never waits for a whole encode made there. Other
    threads (a Python client's, say) keep the one call, which costs less CPU."""
    _THREAD.pieces = True


def _in_pieces() -> bool:
    return _THREAD.pieces


def _dumps_json_whole(value: Any, default: Any) -> bytes:
    """:func:`dumps_json` in one orjson call."""
    try:
        return orjson.dumps(value, default=default, option=_JSON_OPTS)
    except TypeError as exc:
        first = exc
    try:
        return orjson.dumps(_big_ints_spliced(value), default=default, option=_JSON_OPTS)
    except TypeError:
        pass
    try:  # e.g. deeper than orjson's 255 levels
        return json.dumps(_finite(value), default=lambda o: _finite(default(o)), separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError):
        raise first from None


def _dumps_json(value: Any, default: Any = None) -> bytes:
    """:func:`dumps_json`, ``_NotJSON`` if impossible."""
    try:
        return dumps_json(value, default)
    except (TypeError, ValueError) as exc:
        raise _NotJSON(str(exc)) from None


def _dumps_msgpack(value: Any) -> bytes:
    """MessagePack of ``value``; off the event loop, a large list or dict in
    pieces (:mod:`.pieces`), for the reason :func:`dumps_json` gives."""
    if type(value) not in _SCALAR_TYPES and _in_pieces():
        from .pieces import dumps_msgpack  # it builds on this module's one-call encoders

        return dumps_msgpack(value)
    return _dumps_msgpack_whole(value)


def _dumps_msgpack_whole(value: Any) -> bytes:
    return msgpack.packb(value, default=_msgpack_default, use_bin_type=True)


def json_exceeds(value: Any, budget: int) -> bool:
    """True when the JSON text of ``value`` is surely longer than ``budget``
    bytes, or JSON cannot carry it (it holds bytes). A lower bound: False
    does not promise it fits. Stops as soon as the bound passes ``budget``
    (every item adds at least a byte, so after about ``budget`` items), and
    after 65,536 items in any case (undecided: False), so a huge budget costs
    a bounded walk, not a second pass over the value."""
    return _json_walk(value, budget) is True


def json_costly(value: Any, budget: int) -> bool:
    """True unless ``value`` surely encodes quickly: its JSON text may pass
    ``budget`` bytes, or it holds more than 65,536 items (the walk stops
    there, undecided). Dispatch encodes such values off the event loop; the
    walk itself is bounded (~1 ms at most)."""
    return _json_walk(value, budget) is not False


def _json_walk(value: Any, budget: int) -> bool | None:
    """True: the JSON text surely passes ``budget`` (or JSON cannot carry it);
    False: it surely does not... as far as the lower bound can tell; None: the
    walk gave up after 65,536 items."""
    total = 1  # every JSON value is at least one byte; each item below adds the rest of its own
    seen = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v) + 1
        elif isinstance(v, _SCALARS):
            continue
        elif isinstance(v, dict):
            n = len(v)
            total += 4 * n + (n - 1 if n else 1)  # "{}" plus, per entry, '"":' and a value byte, and commas
            if total > budget:
                return True
            seen += n
            if seen > _WALK_LIMIT:
                return None  # undecided: let the encoder measure
            for k, item in v.items():
                if isinstance(k, str):
                    total += len(k)
                stack.append(item)
        elif isinstance(v, (list, tuple, set, frozenset)):
            n = len(v)
            total += 2 * n if n else 1  # "[]" plus n items (1 byte each, counted here) and n-1 commas
            if total > budget:
                return True
            seen += n
            if seen > _WALK_LIMIT:
                return None
            if not set(map(type, v)) <= _SCALAR_TYPES:  # C speed for the common all-scalar list
                stack.extend(item for item in v if not isinstance(item, _SCALARS))
        elif isinstance(v, _BYTES_TYPES):
            return True
        elif npy.is_ndarray(v):
            total += max(2 * v.size - 1, 1) - 1
            if total <= budget:
                seen += v.size
                if seen > _WALK_LIMIT:
                    return None
        if total > budget:
            return True
    return False


def _json_within(value: Any, threshold: int) -> bytes | None:
    """The JSON text of ``value`` if it is at most ``threshold`` bytes, else
    None; a value the size walk proves too long is never encoded to find out."""
    if json_exceeds(value, threshold):
        return None
    try:
        data = _dumps_json(value)
    except _NotJSON:
        return None
    return data if len(data) <= threshold else None


def _encode_array(value: Any, threshold: int, accept: frozenset[str]) -> tuple[bytes, str]:
    _npy_check(value)
    if value.dtype.kind == "c":
        return npy.dumps(value), NPY  # JSON has no complex numbers: npy whatever the caller accepts
    if NPY not in accept:
        return _dumps_json(value), JSON
    data = _json_within(value, threshold)
    return (data, JSON) if data is not None else (npy.dumps(value), NPY)


def _encode_str(value: str, threshold: int, accept: frozenset[str]) -> tuple[bytes, str]:
    if UTF8 not in accept:  # a long one in pieces, off the loop (escaping can take ~8 ns a character)
        return (dumps_json(value) if len(value) > _STR_PIECE else orjson.dumps(value)), JSON
    if len(value) + 2 > threshold:  # the JSON text is surely longer: skip it
        return value.encode("utf-8"), UTF8
    data = orjson.dumps(value)
    return (data, JSON) if len(data) <= threshold else (value.encode("utf-8"), UTF8)


def encode_value(value: Any, threshold: int = DEFAULT_THRESHOLD,
                 accept: frozenset[str] = ACCEPT_ALL) -> tuple[bytes, str]:
    """``(bytes, encoding)`` for one outgoing value, for a caller that accepts
    the binary encodings ``accept`` (rules in the module docstring); encoding
    ``json`` means the value needs no entry in the ``encodings`` map.
    ``TypeError`` for values no encoding carries."""
    kind = type(value)
    if kind is str:  # the common cases first, by exact type (the checks below would agree)
        return _encode_str(value, threshold, accept)
    if kind is float or kind is int or kind is bool or value is None:
        return _dumps_json(value), JSON
    if isinstance(value, bytes):
        return value, RAW
    if isinstance(value, _BYTES_TYPES):
        return bytes(value), RAW  # protobuf takes only bytes
    if isinstance(value, _SCALARS):
        return _dumps_json(value), JSON
    if isinstance(value, str):
        return _encode_str(value, threshold, accept)
    if npy.is_ndarray(value):
        return _encode_array(value, threshold, accept)
    if _is_numpy_scalar(value):
        _npy_check(value)
        if value.dtype.kind == "c":
            import numpy as np

            return npy.dumps(np.asarray(value)), NPY
        return _dumps_json(value), JSON
    if MSGPACK not in accept:
        try:
            return _dumps_json(value, _json_default_text), JSON
        except _NotJSON as exc:
            raise TypeError(str(exc)) from None
    fits = _json_within(value, threshold)
    if fits is not None:
        return fits, JSON
    try:
        return _dumps_msgpack(value), MSGPACK
    except (OverflowError, TypeError, ValueError) as exc:
        # MessagePack cannot carry it (e.g. an int beyond 64 bits): JSON can, at any size.
        try:
            data = _dumps_json(value)
        except _NotJSON:
            raise TypeError(str(exc)) from None
        return data, JSON


def loads_json(data: bytes | bytearray) -> Any:
    """JSON text to Python; ``ValueError`` if it is not JSON. Ints of any
    length come back exact in texts up to 16 KiB; above, ints beyond 64 bits
    come back as floats (orjson), and a text holding one beyond ~1e308 does
    not decode. The one JSON decoder of args and stdio frames."""
    if len(data) <= _BIG_INT_SCAN_LIMIT and _DIGITS_19 in data.translate(_DIGITS_AS_0):
        # orjson would make these ints floats (or fail past ~1e308): the stdlib keeps them.
        try:
            return json.loads(bytes(data), parse_int=_parse_int, parse_constant=_no_constant)
        except RecursionError:  # what orjson reports as a ValueError, the stdlib's parser raises as this
            raise ValueError("JSON text nested too deeply to decode") from None
    return orjson.loads(data)


def decode_value(data: bytes, encoding: str | None = None) -> Any:
    """One incoming value; ``encoding`` None follows CONTRACT.md §3 (JSON,
    else UTF-8 text, else the bytes). Raises ``ValueError`` (or a subclass)
    for data its encoding cannot decode, :class:`InvalidArgument` for an
    unknown encoding or a value nested more than
    :data:`~.nesting.MAX_DEPTH` levels deep (:mod:`.nesting`)."""
    if not encoding:
        try:
            value = loads_json(data)
        except ValueError:
            pass
        else:  # a text this short cannot nest deeper (the common small argument: no call)
            return value if len(data) <= nesting.MAX_DEPTH else nesting.check_json(data, value)
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError:
            return data
    if encoding == JSON:
        return nesting.check_json(data, loads_json(data))
    if encoding == UTF8:
        return str(data, "utf-8")
    if encoding == RAW:
        return data
    if encoding == NPY:
        return npy.loads(data)
    if encoding == MSGPACK:
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise ValueError(f"not MessagePack ({type(exc).__name__}: {exc})") from None
        return nesting.check(value, data=data)
    raise InvalidArgument(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")


def encode_map(values: Mapping[str, Any], threshold: int = DEFAULT_THRESHOLD,
               accept: frozenset[str] = ACCEPT_ALL) -> tuple[dict[str, bytes], dict[str, str]]:
    """Encode a result or chunk map for a caller that accepts ``accept``:
    ``(map of bytes, encodings of non-JSON values)``."""
    out: dict[str, bytes] = {}
    encodings: dict[str, str] = {}
    for key, value in values.items():
        key = key if isinstance(key, str) else str(key)
        try:
            data, encoding = encode_value(value, threshold, accept)
        except TypeError as exc:
            raise TypeError(f"result value {key!r}: {exc}") from None
        out[key] = data
        if encoding != JSON:
            encodings[key] = encoding
    return out, encodings


def decode_map(raw: Mapping[str, bytes], encodings: Mapping[str, str] | None = None,
               hints: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Decode an args map; a value that cannot be decoded is an
    :class:`InvalidArgument` naming its key and encoding.

    ``hints`` (from a handler's declared parameters) say how to read a value
    whose key names no encoding: ``utf8`` (text, as Elixir sent it: ``123``
    stays the string "123"; bytes that are not UTF-8 stay bytes), ``raw``,
    and ``utf8|null`` / ``raw|null`` where the bytes ``null`` are None."""
    encodings = encodings or {}
    out: dict[str, Any] = {}
    for key, data in raw.items():
        encoding = encodings.get(key) or None
        if encoding is None and hints and key in hints:
            out[key] = _hinted(data, hints[key])
            continue
        try:
            out[key] = decode_value(data, encoding)
        except InvalidArgument as exc:
            raise InvalidArgument(f"argument {key!r}: {exc.message}") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the caller's bad input
            raise InvalidArgument(f"argument {key!r} cannot be decoded as {encoding}: {exc}") from None
    return out


def _hinted(data: bytes, hint: str) -> Any:
    if hint.endswith("|null") and data == b"null":
        return None
    if hint.startswith("raw"):
        return data
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError:
        return data  # not text: the declared type's check names the problem
