"""``.npy`` bytes without pickle and with as few copies as the format allows.

The format is numpy's own (``np.save``/``np.load`` read and write it; Elixir
reads it with ``Nx.load_numpy!``): a magic string, a version, a small header
(a Python dict literal with ``descr``, ``fortran_order`` and ``shape``) padded
to 64 bytes, then the array's memory.

* :func:`dumps` makes ONE copy of a C- or Fortran-contiguous array (header and
  memory joined straight into the result ``bytes``), where ``np.save`` into a
  ``BytesIO`` makes two (write, then ``getvalue``). Other layouts (strided
  views) are made contiguous first: two copies.
* :func:`loads` makes NO copy: the array is a read-only view over the given
  bytes (``np.frombuffer``) and keeps them alive. Call ``.copy()`` on it to
  write to it. Fortran-ordered data comes back Fortran-ordered.
* Object arrays (``dtype=object`` or structured dtypes holding objects) are
  refused both ways: they need pickle, which never touches the wire.
"""
from __future__ import annotations

import ast
import io
import math
from typing import Any

__all__ = ["MAGIC", "dumps", "loads", "is_ndarray"]

MAGIC = b"\x93NUMPY"


def is_ndarray(value: Any) -> bool:
    """True for numpy arrays, without importing numpy for everyone else."""
    t = type(value)
    return t.__module__ == "numpy" and t.__name__ == "ndarray"


def _refuse_objects(dtype: Any) -> None:
    if dtype.hasobject:
        raise TypeError(
            f"numpy arrays of dtype {dtype} hold Python objects, which only pickle can carry; "
            "convert them (e.g. .tolist() or .astype(str)) first"
        )


def _header(array: Any, fortran: bool) -> bytes:
    import numpy as np

    fmt = np.lib.format
    meta = {"descr": fmt.dtype_to_descr(array.dtype), "fortran_order": fortran, "shape": array.shape}
    buf = io.BytesIO()
    try:
        fmt.write_array_header_1_0(buf, meta)
    except ValueError:  # a header over 64 KiB (huge structured dtypes) needs version 2.0
        buf = io.BytesIO()
        fmt.write_array_header_2_0(buf, meta)
    return buf.getvalue()


def dumps(array: Any) -> bytes:
    """The ``.npy`` bytes of ``array`` (see the module docstring for copies)."""
    import numpy as np

    _refuse_objects(array.dtype)
    if array.flags.c_contiguous:
        body, fortran = array, False
    elif array.flags.f_contiguous:
        body, fortran = array.T, True  # the transpose of an F array is C-contiguous: same memory
    else:
        body, fortran = np.ascontiguousarray(array), False
    header = _header(array, fortran)
    if body.nbytes == 0:
        return header
    # bytes.join copies each buffer once, straight into the new bytes object.
    return b"".join((header, body.reshape(-1).view(np.uint8).data))


def loads(data: bytes) -> Any:
    """A read-only array viewing ``data`` (no copy); ``ValueError`` if ``data``
    is not a well-formed ``.npy`` or holds objects."""
    import numpy as np

    view = memoryview(data)
    if len(view) < 10 or bytes(view[:6]) != MAGIC:
        raise ValueError("not .npy data (bad magic)")
    major = view[6]
    if major == 1:
        size, start = int.from_bytes(view[8:10], "little"), 10
    elif major in (2, 3):
        size, start = int.from_bytes(view[8:12], "little"), 12
    else:
        raise ValueError(f"unsupported .npy version {major}.{view[7]}")
    end = start + size
    if len(view) < end:
        raise ValueError(".npy header is truncated")
    encoding = "utf-8" if major == 3 else "latin1"
    try:
        meta = ast.literal_eval(bytes(view[start:end]).decode(encoding))  # literals only: no code runs
    except (ValueError, SyntaxError, UnicodeDecodeError) as exc:
        raise ValueError(f".npy header is not a literal: {exc}") from None
    if not isinstance(meta, dict) or set(meta) != {"descr", "fortran_order", "shape"}:
        raise ValueError(".npy header must have exactly descr, fortran_order and shape")
    shape, fortran = meta["shape"], meta["fortran_order"]
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f".npy shape {shape!r} is not a tuple of sizes")
    if not isinstance(fortran, bool):
        raise ValueError(".npy fortran_order must be a bool")
    try:
        dtype = np.lib.format.descr_to_dtype(meta["descr"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f".npy dtype {meta['descr']!r} is not valid: {exc}") from None
    _refuse_objects(dtype)
    count = math.prod(shape)
    expected = count * dtype.itemsize
    if len(view) - end != expected:
        raise ValueError(f".npy body is {len(view) - end} bytes; shape {shape} of {dtype} needs {expected}")
    if count == 0:
        return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=end)
    if fortran:
        return flat.reshape(shape[::-1]).T
    return flat.reshape(shape)
