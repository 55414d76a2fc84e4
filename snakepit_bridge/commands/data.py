"""process_large_dataset: stream a CSV file (or synthetic rows) in chunks.

Contract
--------
Arguments:

* ``file_path`` (str): a CSV file with a header row (``has_header`` false
  names the columns ``col1..colN``). Read as UTF-8 (a BOM is skipped,
  undecodable bytes become U+FFFD), ``delimiter`` (default ``","``).
  The file is streamed: two chunks of rows (the current one and a one-chunk
  lookahead) are in memory at a time, so RSS depends on the chunk, never on
  the file size. A line is read with a bound: a line longer than 1 MiB
  (``MAX_LINE`` = 1,048,576 characters; a file without newlines, say) ends the
  call with INVALID_ARGUMENT saying so. Missing file -> NOT_FOUND. Only a
  regular file under a ``--data-dir`` is read (else PERMISSION_DENIED; see
  :mod:`snakepit_bridge._files`); it is opened once and the same open file
  serves the ``count_rows`` pass.
* ``total_rows`` (int, default 1000): without ``file_path``, the 0.3 synthetic
  mode: row ``i`` (0-based) is ``id=i, value=((i*7919) % 1000) / 10,
  category="c{i % 4}"``; it goes through the same pipeline.
* ``chunk_size`` (int, 1..1,000,000, default 1000): rows per streamed chunk,
  at most: a chunk is also cut once its rows take about 16 MiB
  (``CHUNK_BUDGET``, estimated as the text plus 120 bytes per row and 60 per
  field, plus 400 and 120 more with ``include_rows``), so a call's memory is
  bounded in bytes whatever ``chunk_size``; ``rows_in_chunk`` says how many
  rows a chunk holds.
* ``operations``: a list of names, or a dict ``name -> options`` (options a
  dict, or true). Applied in the order clean -> transform -> aggregate.
  Default ``["clean", "aggregate"]``.

  - ``clean`` ``{"mode": "drop" | "count"}`` (default drop): a row is *dirty*
    when a numeric column holds a value ``float()`` rejects or a non-finite
    one (empty, "n/a", "nan", "inf"...). ``drop`` skips dirty rows (counted in
    ``skipped``); ``count`` keeps them and only counts them; their bad cells
    are left out of the aggregates, their good cells are counted. Without
    ``clean`` dirty rows are kept the same way (counted as ``dirty_rows``).
  - ``transform`` ``{"kind": "signed_log1p" | "abs" | "scale", "factor": 1.0,
    "offset": 0.0, "columns": [...]}``: a single-pass per-value transform of
    the numeric ``columns`` (default all): ``signed_log1p`` (default) is
    ``copysign(log1p(|x|), x)``, ``abs`` is ``|x|``, ``scale`` is
    ``x * factor + offset``. Aggregates see transformed values.
  - ``aggregate`` ``{"group_by": col, "max_groups": 10000}``: per numeric
    column ``count``, ``sum``, ``mean``, ``min``, ``max`` of the kept rows'
    valid values (mean/min/max null when count is 0), and row counts per
    value of ``group_by`` (also accepted as a top-level argument). Past
    ``max_groups`` distinct values, further new values count under
    ``"__other__"`` and ``groups_truncated`` is set (bounded memory).
* ``numeric_columns``: the numeric columns; by default inferred from the first
  100 data rows: a column is numeric when more than half of its non-empty
  values there parse as finite floats (the ``group_by`` column never is).
* ``count_rows`` (bool, default false): count the file's rows first (an extra
  streamed pass, stopped by a cancel or the deadline like the main one) so
  every chunk's ``total_rows`` is exact.
* ``include_rows`` (bool, default false): put the chunk's kept rows (after
  transform) in the chunk under ``rows``.

Rows: a blank line is ignored; a row with the wrong number of fields (or one
the csv module rejects) is an *error* row: skipped and counted in ``errors``.

Each chunk: ``chunk_number`` (from 1), ``rows_in_chunk``, ``processed_rows``
(data rows read so far), ``total_rows`` and ``total_rows_estimated`` (until
the total is known, rows so far x data bytes / bytes those rows took, header
excluded; exact with ``count_rows``, in synthetic mode and on the last chunk),
``progress_percent`` (while estimated: that byte fraction), ``memory_usage_mb``
(this process's RSS), cumulative ``kept_rows``, ``skipped_rows``,
``error_rows``, ``dirty_rows``.
The final chunk: ``final_stats`` = ``{rows_read, processed, skipped, errors,
dirty_rows, columns, numeric_columns, operations, aggregates}`` plus
``chunk_count``, ``elapsed_ms``, ``rows_per_second``.

Measured once by hand (2-core shared machine, load ~8): a 1 GB file of
25.76 M rows, chunk_size 10000, clean+transform+aggregate with group_by:
RSS grew by 12 MB; 115 k rows/s under load (~360 k rows/s on a quiet machine).

Sums are ``math.fsum`` per chunk combined with compensated summation, so they
agree with ``math.fsum`` over all values to a few ulps; counts, min, max and
group counts are exact.
"""
from __future__ import annotations

import csv
import functools
import io
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Annotated, Any

from .._files import data_dirs, open_data_file
from ..context import Context
from ..errors import InvalidArgument
from ..params import Param
from ..registry import Registry

registry = Registry()

_OPS = ("clean", "transform", "aggregate")
_TRANSFORMS = {
    "signed_log1p": lambda x, f, o: math.copysign(math.log1p(abs(x)), x),
    "abs": lambda x, f, o: abs(x),
    "scale": lambda x, f, o: x * f + o,
}
_INFER_ROWS = 100
_BAD_ROW: list[str] = ["<row rejected by the csv parser>"]
_CHECK_EVERY = 65536  # rows between cancellation checks inside one chunk
MAX_LINE = 1 << 20  # characters in one line of the file; a longer line ends the call with INVALID_ARGUMENT
_CHECK_BYTES = 16 << 20  # characters read between cancellation checks (besides every _CHECK_EVERY rows)
CHUNK_BUDGET = 16 << 20  # estimated bytes of one chunk's rows; a chunk is cut once it holds this much
_ROW_COST, _FIELD_COST = 120, 60  # estimated bytes per row (list) and per field (str) beyond the text
_OUT_ROW_COST, _OUT_FIELD_COST = 400, 120  # and per row / field again for the dicts of include_rows
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """This process's resident set size in MB (current, not peak, on Linux)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return round(int(f.read().split()[1]) * _PAGE / 1048576, 2)
    except OSError:
        import resource  # peak, not current: the best other platforms offer

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 2)


def _int_arg(args: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"process_large_dataset {name!r} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _parse_operations(raw: Any) -> dict[str, dict[str, Any]]:
    """``["clean", ...]`` or ``{"clean": {...}, ...}`` -> ``{name: options}``."""
    if raw is None:
        raw = ["clean", "aggregate"]
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list):
        items: list[tuple[str, Any]] = [(name, {}) for name in raw]
    elif isinstance(raw, dict):
        items = [(k, {} if v is True or v is None else v) for k, v in raw.items() if v is not False]
    else:
        raise InvalidArgument(f"process_large_dataset 'operations' must be a list or a dict, got {raw!r}")
    ops: dict[str, dict[str, Any]] = {}
    for name, options in items:
        if name not in _OPS:
            raise InvalidArgument(f"process_large_dataset 'operations': unknown operation {name!r} (known: {', '.join(_OPS)})")
        if not isinstance(options, dict):
            raise InvalidArgument(f"process_large_dataset 'operations': options of {name!r} must be a dict, got {options!r}")
        ops[name] = options
    clean = ops.get("clean")
    if clean is not None and clean.get("mode", "drop") not in ("drop", "count"):
        raise InvalidArgument(f"process_large_dataset clean 'mode' must be 'drop' or 'count', got {clean.get('mode')!r}")
    agg = ops.get("aggregate")
    if agg is not None:
        mg = agg.get("max_groups", 10000)
        if isinstance(mg, bool) or not isinstance(mg, int) or mg < 1:
            raise InvalidArgument(f"process_large_dataset aggregate 'max_groups' must be a positive integer, got {mg!r}")
    tr = ops.get("transform")
    if tr is not None:
        if tr.get("kind", "signed_log1p") not in _TRANSFORMS:
            raise InvalidArgument(f"process_large_dataset transform 'kind' must be one of {sorted(_TRANSFORMS)}, got {tr.get('kind')!r}")
        for key in ("factor", "offset"):
            v = tr.get(key, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidArgument(f"process_large_dataset transform {key!r} must be a number, got {v!r}")
    return ops


def _finite(s: str) -> float | None:
    try:
        x = float(s)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


class _ColumnStats:
    """count/sum/min/max of one column, folded in a chunk at a time."""

    __slots__ = ("count", "total", "comp", "lo", "hi")

    def __init__(self) -> None:
        self.count, self.total, self.comp, self.lo, self.hi = 0, 0.0, 0.0, math.inf, -math.inf

    def add(self, values: list[float]) -> None:
        if not values:
            return
        self.count += len(values)
        s = math.fsum(values)
        t = self.total + s  # Neumaier: keep what the addition rounded away
        self.comp += (self.total - t) + s if abs(self.total) >= abs(s) else (s - t) + self.total
        self.total = t
        self.lo = min(self.lo, min(values))
        self.hi = max(self.hi, max(values))

    def result(self) -> dict[str, Any]:
        n = self.count
        total = self.total + self.comp
        return {"count": n, "sum": total, "mean": total / n if n else None,
                "min": self.lo if n else None, "max": self.hi if n else None}


class _Pipeline:
    """Applies the operations to chunks of rows (lists of strings)."""

    def __init__(self, header: list[str], sample: list[list[str]], args: dict[str, Any],
                 ops: dict[str, dict[str, Any]]) -> None:
        self.header, self.ncols = header, len(header)
        agg = ops.get("aggregate")
        group_by = (agg or {}).get("group_by", args.get("group_by"))
        if group_by is not None and group_by not in header:
            raise InvalidArgument(f"process_large_dataset 'group_by': no column {group_by!r} (columns: {header})")
        self.group_idx = header.index(group_by) if (agg is not None and group_by is not None) else None
        self.group_by = group_by if self.group_idx is not None else None
        numeric = args.get("numeric_columns")
        if numeric is None:
            numeric = [name for j, name in enumerate(header) if name != group_by and _looks_numeric(sample, j)]
        elif not isinstance(numeric, list) or any(c not in header for c in numeric):
            raise InvalidArgument(f"process_large_dataset 'numeric_columns' must list columns of {header}, got {numeric!r}")
        self.numeric = list(numeric)
        self.num_idx = [header.index(c) for c in self.numeric]
        self.drop = "clean" in ops and ops["clean"].get("mode", "drop") == "drop"
        self.transform = None
        tr = ops.get("transform")
        if tr is not None:
            cols = tr.get("columns", self.numeric)
            if not isinstance(cols, list) or any(c not in self.numeric for c in cols):
                raise InvalidArgument(f"process_large_dataset transform 'columns' must list numeric columns {self.numeric}, got {cols!r}")
            fn, f, o = _TRANSFORMS[tr.get("kind", "signed_log1p")], float(tr.get("factor", 1.0)), float(tr.get("offset", 0.0))
            self.transform = [(k, fn, f, o) for k, c in enumerate(self.numeric) if c in cols]
        self.aggregate = agg is not None
        self.max_groups = int((agg or {}).get("max_groups", 10000))
        self.stats = [_ColumnStats() for _ in self.numeric]
        self.groups: Counter[str] = Counter()
        self.groups_truncated = False
        self.read = self.kept = self.skipped = self.errors = self.dirty = 0

    def feed(self, rows: list[list[str]], include_rows: bool) -> list[dict[str, Any]] | None:
        """Process one chunk; returns the kept rows as dicts if asked."""
        values: list[list[float]] = [[] for _ in self.num_idx]
        kept_rows: list[list[Any]] | None = [] if include_rows else None
        groups: list[str] = []
        ncols, num_idx, drop, gidx = self.ncols, self.num_idx, self.drop, self.group_idx
        for row in rows:
            self.read += 1
            if len(row) != ncols or row is _BAD_ROW:
                self.errors += 1
                continue
            parsed = [_finite(row[j]) for j in num_idx]
            if None in parsed:
                self.dirty += 1
                if drop:
                    self.skipped += 1
                    continue
            self.kept += 1
            for k, x in enumerate(parsed):
                if x is not None:
                    values[k].append(x)
            if gidx is not None:
                groups.append(row[gidx])
            if kept_rows is not None:
                kept_rows.append([row, parsed])
        if self.transform:
            for k, fn, f, o in self.transform:
                values[k] = [fn(x, f, o) for x in values[k]]
        if self.aggregate:
            for st, vals in zip(self.stats, values, strict=True):
                st.add(vals)
            self._count_groups(groups)
        if kept_rows is None:
            return None
        return [self._as_dict(row, parsed) for row, parsed in kept_rows]

    def _as_dict(self, row: list[str], parsed: list[float | None]) -> dict[str, Any]:
        out: dict[str, Any] = dict(zip(self.header, row, strict=True))
        for k, (name, x) in enumerate(zip(self.numeric, parsed, strict=True)):
            if x is not None and self.transform:
                for kk, fn, f, o in self.transform:
                    if kk == k:
                        x = fn(x, f, o)
            out[name] = x
        return out

    def _count_groups(self, groups: list[str]) -> None:
        if len(self.groups) + len(set(groups)) <= self.max_groups:
            self.groups.update(groups)
            return
        for g in groups:  # slow path only near the cap
            if g in self.groups or len(self.groups) < self.max_groups:
                self.groups[g] += 1
            else:
                self.groups["__other__"] += 1
                self.groups_truncated = True

    def final_stats(self, ops: dict[str, dict[str, Any]]) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "rows_read": self.read, "processed": self.kept, "skipped": self.skipped, "errors": self.errors,
            "dirty_rows": self.dirty, "columns": self.header, "numeric_columns": self.numeric,
            "operations": list(ops),
        }
        if self.aggregate:
            stats["aggregates"] = {
                "columns": {name: st.result() for name, st in zip(self.numeric, self.stats, strict=True)},
                "group_by": self.group_by,
                "groups": dict(self.groups) if self.group_by is not None else {},
                "groups_truncated": self.groups_truncated,
            }
        return stats


def _looks_numeric(sample: list[list[str]], j: int) -> bool:
    cells = [row[j] for row in sample if j < len(row) and row[j].strip()]
    good = sum(_finite(c) is not None for c in cells)
    return good > 0 and 2 * good > len(cells)


def _csv_rows(reader: Iterator[list[str]], ctx: Context) -> Iterator[list[str]]:
    """Rows from a csv reader; a row the csv module rejects becomes
    ``_BAD_ROW`` (an error row); blank lines are dropped. Stops early (quietly)
    once the call is cancelled."""
    n = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            row = _BAD_ROW
        n += 1
        if n % _CHECK_EVERY == 0 and ctx.cancelled:
            return
        if row:
            yield row


class _Position:
    """How far the csv reader has got into the file, in bytes, so that an
    estimate divides rows by the bytes those very rows took. ``raw.tell()``
    cannot say: it runs ahead by the decoder's read-ahead and by the rows of
    the lookahead chunk (on a small file it is the file size at once)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.marks: dict[int, int] = {}  # row count -> bytes through the end of that row

    def lines(self, text: Any, ctx: Context) -> Iterator[str]:
        """The lines of ``text``, each read with a bound (:data:`MAX_LINE`
        characters; a longer line, a file without newlines say, is an
        INVALID_ARGUMENT naming the bound rather than unbounded memory),
        counting their UTF-8 size as the csv reader takes them."""
        n, check = 0, _CHECK_BYTES
        for line in iter(functools.partial(text.readline, MAX_LINE + 1), ""):
            n += 1
            if len(line) > MAX_LINE and line[-1] not in "\r\n":
                raise _too_long(n)
            self.bytes += len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass"))
            if self.bytes >= check:  # long lines: check cancellation by bytes too, not only every N rows
                check = self.bytes + _CHECK_BYTES
                if ctx.cancelled:
                    return
            yield line

    def mark(self, rows: int) -> int:
        """Bytes through the end of data row ``rows``, asked right after taking it."""
        return self.marks.get(rows, self.bytes)

    def rows(self, rows: Iterator[list[str]]) -> Iterator[list[str]]:
        """The rows; for the first rows (read ahead for column inference),
        ``marks[n]`` is the byte position at the end of row n (the csv reader
        reads no further than the row it returns, so ``self.bytes`` is exactly
        that when the row is yielded). Later rows are taken one chunk at a time,
        so ``self.bytes`` right after a chunk is taken is its end."""
        n = 0
        for row in rows:
            n += 1
            if n <= _INFER_ROWS:
                self.marks[n] = self.bytes
            yield row


def _too_long(n: int) -> InvalidArgument:
    return InvalidArgument(f"process_large_dataset 'file_path': line {n} is longer than {MAX_LINE} characters "
                           "(1 MiB); a CSV row must fit in a line of at most 1 MiB")


def _bounded_lines(text: Any, ctx: Context) -> Iterator[str]:
    """The lines of ``text``, each read with a bound (:data:`MAX_LINE`
    characters): a longer line is an INVALID_ARGUMENT naming the bound. Stops
    (quietly) once the call is cancelled, checked every _CHECK_BYTES characters."""
    n, chars, check = 0, 0, _CHECK_BYTES
    for line in iter(functools.partial(text.readline, MAX_LINE + 1), ""):
        n += 1
        size = len(line)
        if size > MAX_LINE and line[-1] not in "\r\n":
            raise _too_long(n)
        chars += size
        if chars >= check:
            check = chars + _CHECK_BYTES
            if ctx.cancelled:
                return
        yield line


def _take(rows: Iterator[list[str]], size: int, include_rows: bool, position: _Position | None) -> list[list[str]]:
    """The next chunk: ``size`` rows, or fewer once they take about
    :data:`CHUNK_BUDGET` bytes (an estimate: the text plus per-row and
    per-field overhead, more with ``include_rows``), so a chunk's memory is
    bounded whatever ``chunk_size``. Rows are taken in batches sized so that
    one batch cannot overshoot the budget by much (C-level loops, no Python
    work per row)."""
    row_cost, field_cost = (_ROW_COST + _OUT_ROW_COST, _FIELD_COST + _OUT_FIELD_COST) if include_rows \
        else (_ROW_COST, _FIELD_COST)
    chunk: list[list[str]] = []
    cost, batch = 0, 1
    while len(chunk) < size:
        start = position.bytes if position is not None else 0
        got = list(islice(rows, min(batch, size - len(chunk))))
        if not got:
            break
        chunk += got
        text = position.bytes - start if position is not None else 24 * len(got)
        cost += row_cost * len(got) + field_cost * sum(map(len, got)) + text
        if cost >= CHUNK_BUDGET:
            break
        batch = max(1, min(4096, (CHUNK_BUDGET - cost) * len(chunk) // (2 * cost)))
    return chunk


def _synthetic(total: int) -> Iterator[list[str]]:
    for i in range(total):
        yield [str(i), str(((i * 7919) % 1000) / 10), f"c{i % 4}"]


def _open(path: str, ctx: Context, buffering: int = -1) -> Any:
    """The one gate for caller-named files (--data-dir, regular files only)."""
    return open_data_file(path, data_dirs(ctx), where="process_large_dataset 'file_path'", buffering=buffering)


def _count_rows(raw: Any, delimiter: str, has_header: bool, ctx: Context) -> int:
    """Rows in the already open file ``raw`` (left open, rewound): the same
    file the rows are then read from, never reopened by name."""
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
    try:
        n = sum(1 for _ in _csv_rows(csv.reader(_bounded_lines(text, ctx), delimiter=delimiter), ctx))
    finally:
        text.detach()
    raw.seek(0)
    return max(0, n - 1) if has_header else n


@dataclass(repr=False, eq=False)
class DatasetArgs:
    file_path: Annotated[str, Param("a CSV file; synthetic rows when left out", min_length=1)] | None = None
    total_rows: Annotated[int, Param("synthetic rows (without file_path)", ge=0, le=10**12)] = 1000
    chunk_size: Annotated[int, Param("rows per chunk", ge=1, le=1_000_000)] = 1000
    operations: Annotated[list[str] | dict[str, Any] | str, Param(
        "clean, transform, aggregate: names, or a map name -> options")] | None = None
    numeric_columns: list[str] | None = None
    group_by: str | None = None
    delimiter: Annotated[str, Param(min_length=1, max_length=1)] = ","
    has_header: bool = True
    count_rows: bool = False
    include_rows: bool = False


@registry.command("process_large_dataset", extra="ignore")
def process_large_dataset(declared: DatasetArgs, ctx: Context) -> Iterator[Any]:
    """Stream a CSV file (or synthetic rows) through clean/transform/aggregate;
    see the module docstring for the full contract."""
    args = vars(declared)  # the checked arguments, every one present (defaults filled in)
    started = time.monotonic()
    chunk_size = _int_arg(args, "chunk_size", 1000, 1, 1_000_000)
    ops = _parse_operations(args.get("operations"))
    include_rows = bool(args.get("include_rows", False))
    path = args.get("file_path")
    raw = text = None
    position: _Position | None = None
    header_bytes = 0
    try:
        if path is None:
            wanted = _int_arg(args, "total_rows", 1000, 0, 10**12)
            total: int | None = wanted
            header, rows = ["id", "value", "category"], _synthetic(wanted)
            size = 0
        else:
            if not isinstance(path, str) or not path:
                raise InvalidArgument(f"process_large_dataset 'file_path' must be a non-empty string, got {path!r}")
            delimiter = args.get("delimiter", ",")
            if not isinstance(delimiter, str) or len(delimiter) != 1:
                raise InvalidArgument(f"process_large_dataset 'delimiter' must be one character, got {delimiter!r}")
            has_header = bool(args.get("has_header", True))
            raw = _open(path, ctx, 1 << 20)  # closed in finally
            size = os.fstat(raw.fileno()).st_size
            total = _count_rows(raw, delimiter, has_header, ctx) if args.get("count_rows") else None
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            position = _Position()
            rows = _csv_rows(csv.reader(position.lines(text, ctx), delimiter=delimiter), ctx)
            if has_header:
                header = next(rows, [])
                header_bytes = position.bytes
            else:
                first = next(rows, None)
                header = [f"col{i + 1}" for i in range(len(first or []))]
                rows = _chain([first] if first else [], rows)
            rows = position.rows(rows)
        sample = list(islice(rows, _INFER_ROWS))
        pipe = _Pipeline([str(h) for h in header], sample, args, ops)
        rows = _chain(sample, rows)
        chunk = _take(rows, chunk_size, include_rows, position)
        taken = len(chunk)
        mark = position.mark(taken) if position is not None else 0
        number = 0
        while chunk and not ctx.cancelled:
            following = _take(rows, chunk_size, include_rows, position)  # one chunk of lookahead: the last chunk knows it is last
            taken_after = taken + len(following)
            mark_after = position.mark(taken_after) if position is not None else 0
            number += 1
            kept = pipe.feed(chunk, include_rows)
            last = not following
            fraction = 0.0  # of the data bytes (after the header), read through this chunk
            if position is not None and not last:
                consumed = mark - header_bytes
                data_size = size - header_bytes
                fraction = min(1.0, consumed / data_size) if consumed > 0 and data_size > 0 else 0.0
            if last or total is not None:
                exact, estimated = (pipe.read if last else total), False
            else:
                exact = max(pipe.read, round(pipe.read / fraction)) if fraction else pipe.read
                estimated = True
            if last:
                percent = 100.0
            elif estimated:
                percent = min(99.99, round(100.0 * fraction, 2))
            else:
                percent = round(100.0 * pipe.read / exact, 2) if exact else 100.0
            out: dict[str, Any] = {
                "chunk_number": number, "rows_in_chunk": len(chunk), "processed_rows": pipe.read,
                "total_rows": exact, "total_rows_estimated": estimated, "progress_percent": percent,
                "memory_usage_mb": rss_mb(), "kept_rows": pipe.kept, "skipped_rows": pipe.skipped,
                "error_rows": pipe.errors, "dirty_rows": pipe.dirty,
            }
            if kept is not None:
                out["rows"] = kept
            yield out
            chunk, taken, mark = following, taken_after, mark_after
        if ctx.cancelled:
            return
        elapsed = time.monotonic() - started
        yield ctx.final({
            "final_stats": pipe.final_stats(ops), "processed_rows": pipe.read, "total_rows": pipe.read,
            "chunk_count": number, "elapsed_ms": round(elapsed * 1000, 3),
            "rows_per_second": round(pipe.read / elapsed, 1) if elapsed > 0 else None,
            "memory_usage_mb": rss_mb(),
        })
    finally:
        if text is not None:
            text.close()  # closes raw too
        elif raw is not None:
            raw.close()


def _chain(first: list[list[str]], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield from first
    yield from rest
