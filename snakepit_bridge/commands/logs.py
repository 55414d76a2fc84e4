"""tail_and_analyze: follow a growing log file and stream the lines that match.

Contract
--------
Arguments:

* ``log_path`` (str, required): the file, a regular file under a ``--data-dir``
  (else PERMISSION_DENIED; see :mod:`snakepit_bridge._files`). Missing -> NOT_FOUND.
* ``patterns``: regexes in RE2 syntax (Python ``re`` without backreferences
  and lookaround), as strings or as ``{"pattern": str, "severity": str}``;
  default ``["CRITICAL", "FATAL", "ERROR", "WARN"]``. At most MAX_PATTERNS
  patterns of at most MAX_PATTERN_CHARS characters each. They run on RE2
  (google-re2), a linear-time engine: no pattern can make a line take more
  than time proportional to its length (``(a|a)*Q`` included). The factor is
  the compiled program's size, so that is bounded too: a pattern may compile
  to at most MAX_PROGRAM_SIZE (1000) RE2 instructions (``a[ab]{999}c`` is
  refused), all of them to MAX_TOTAL_PROGRAM_SIZE (16384), and a line is
  matched on its first ``LINE_WORK // total`` characters (2**27 // total: the
  whole 1 MiB line while the patterns total at most 128 instructions, as the
  defaults do; the reported ``log_line`` is whole). Cancellation and the
  deadline are checked between lines and between patterns, so a call stops
  within one search (well under a second). An invalid or
  unsupported regex -> INVALID_ARGUMENT. A line is reported once, for the
  first pattern that matches (a search, not an anchored match).
* ``context_lines`` (int 0..100, default 2): lines of context before and after
  each match (like ``grep -C``).
* ``from_beginning`` (bool, default false): false starts at the end of the file
  (``tail -f``: only lines appended after the start are read; a trailing
  partial line is read once completed); true reads the existing lines first.
* ``max_matches`` (int >= 1, optional): stop after that many matches.
* ``poll_interval`` (seconds, 0.005..5, default 0.1): how often a quiet file is
  checked for new data, rotation and truncation.

The stream: first ``{"event": "started", "log_path", "line_number",
"from_beginning"}`` once the file is open (``line_number``: lines before the
starting point), so a caller knows that lines it appends from now on will be
seen. Then one chunk per match: ``{"event": "match", "log_line",
"line_number" (1-based, within the current file), "pattern_matched" (the
pattern's text), "severity", "timestamp", "timestamp_source" ("line" or
"seen"), "context_lines": {"before": [...], "after": [...]}}``.

* ``severity``: the pattern's explicit severity, else the first level word in
  the line (upper case, whole word), else a level word in the pattern, else
  ``"UNKNOWN"``; normalised: FATAL/EMERG/ALERT/CRITICAL -> CRITICAL, ERR/ERROR
  -> ERROR, WARN/WARNING -> WARNING, NOTICE/INFO -> INFO, DEBUG/TRACE -> DEBUG.
* ``timestamp``: ISO 8601, parsed from the line when it holds an ISO 8601
  (``2026-11-22 19:35:48,123``), Apache (``[22/Nov/2026:19:35:48 +0000]``) or
  syslog (``Nov 22 19:35:48``, current year) time; else the UTC time the line
  was read.
* After-context: a match is sent as soon as ``context_lines`` further lines
  have been read, or when the file goes quiet (the next poll finds nothing
  new), or when the stream ends; so it is never held back by more than about
  one ``poll_interval`` of silence.

Rotation: when the path names a new file (renamed and recreated), the rest of
the old file is read first, then ``{"event": "rotated"}`` is sent and the new
file is read from its start (line numbers restart at 1). When the file shrinks
(truncated), ``{"event": "truncated"}`` and reading restarts at offset 0.

The stream ends when cancelled (the file is closed at once; polling uses a
cancellation-aware wait), shortly before the call's deadline, or after
``max_matches``; the last two end with a final chunk ``{"stopped": "deadline"
| "max_matches", "matches", "lines_read", "rotations"}``. The file is read in
blocks; only the current partial line (at most 1 MiB, longer lines are cut)
and the context window are held in memory.
"""
from __future__ import annotations

import collections
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any

from .._files import data_dirs, open_data_file
from ..context import Context
from ..errors import InvalidArgument, NotFound
from ..params import Param
from ..registry import Registry

registry = Registry()

DEFAULT_PATTERNS = ["CRITICAL", "FATAL", "ERROR", "WARN"]
MAX_PATTERNS = 256
MAX_PATTERN_CHARS = 4096
# RE2's worst case is about (program size x line length) steps (a[ab]{50}c: ~0.3 s on a 1 MiB
# line here); these bound it. A pattern's compiled program may have at most MAX_PROGRAM_SIZE
# instructions (a[ab]{999}c has 1005); all the patterns together at most MAX_TOTAL_PROGRAM_SIZE;
# and a line is matched on its first LINE_WORK // (total program size) characters (the whole
# 1 MiB line unless the patterns total more than 128 instructions; at least 8 KiB).
MAX_PROGRAM_SIZE = 1000
MAX_TOTAL_PROGRAM_SIZE = 16384
LINE_WORK = 1 << 27
_CHECK_WORK = 1 << 23  # (program size x characters) searched between cancellation/deadline checks


def _compile(pattern: str) -> Any:
    """RE2, imported on first use (start-up stays lean). Raises InvalidArgument."""
    import re2

    options = re2.Options()
    options.log_errors = False  # the error reaches the caller; nothing unstructured on stderr
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise InvalidArgument(f"tail_and_analyze 'patterns': invalid regex {pattern!r} (RE2 syntax): {why}") from None
_BLOCK = 1 << 16
_READ_BUDGET = 1 << 20  # bytes read per loop turn before checking cancellation and yielding
_MAX_LINE = 1 << 20
_DEADLINE_MARGIN = 0.1  # end our own stream this long before the call's deadline

_LEVELS = {"FATAL": "CRITICAL", "EMERG": "CRITICAL", "EMERGENCY": "CRITICAL", "ALERT": "CRITICAL",
           "CRITICAL": "CRITICAL", "ERR": "ERROR", "ERROR": "ERROR", "WARN": "WARNING", "WARNING": "WARNING",
           "NOTICE": "INFO", "INFO": "INFO", "DEBUG": "DEBUG", "TRACE": "DEBUG"}
_LEVEL_RE = re.compile(r"\b(" + "|".join(sorted(_LEVELS, key=len, reverse=True)) + r")\b")
_LEVEL_RE_I = re.compile(_LEVEL_RE.pattern, re.IGNORECASE)
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?\s?(Z|[+-]\d{2}:?\d{2})?")
_APACHE = re.compile(r"\[(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})\]")
_SYSLOG = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})\b")
_MONTHS = {m: i + 1 for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}


def parse_timestamp(line: str) -> str | None:
    """The line's own time as ISO 8601, or None when it has no recognisable one."""
    try:
        if m := _ISO.search(line):
            y, mo, d, h, mi, s, frac, tz = m.groups()
            micro = int((frac or "0")[:6].ljust(6, "0"))
            tzinfo = None
            if tz:
                tzinfo = timezone.utc if tz == "Z" else datetime.strptime(tz.replace(":", ""), "%z").tzinfo
            return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro, tzinfo).isoformat()
        if m := _APACHE.search(line):
            d, mon, y, h, mi, s, tz = m.groups()
            tzinfo = datetime.strptime(tz, "%z").tzinfo
            return datetime(int(y), _MONTHS[mon], int(d), int(h), int(mi), int(s), tzinfo=tzinfo).isoformat()
        if (m := _SYSLOG.search(line)) and m.group(1) in _MONTHS:
            mon, d, h, mi, s = m.groups()
            year = datetime.now(timezone.utc).year
            return datetime(year, _MONTHS[mon], int(d), int(h), int(mi), int(s)).isoformat()
    except (ValueError, KeyError):
        return None  # looked like a time but is not a valid one
    return None


def severity_of(line: str, pattern: str, explicit: str | None) -> str:
    """See the module docstring for the order of precedence."""
    if explicit:
        return explicit
    if m := _LEVEL_RE.search(line):
        return _LEVELS[m.group(1)]
    if m := _LEVEL_RE_I.search(pattern):
        return _LEVELS[m.group(1).upper()]
    return "UNKNOWN"


def _patterns(raw: Any) -> list[tuple[Any, str, str | None]]:
    if raw is None:
        raw = DEFAULT_PATTERNS
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidArgument(f"tail_and_analyze 'patterns' must be a non-empty list of regexes, got {raw!r}")
    if len(raw) > MAX_PATTERNS:
        raise InvalidArgument(f"tail_and_analyze 'patterns': at most {MAX_PATTERNS}, got {len(raw)}")
    out = []
    for p in raw:
        severity = None
        if isinstance(p, dict):
            severity = p.get("severity")
            if severity is not None and not isinstance(severity, str):
                raise InvalidArgument(f"tail_and_analyze pattern 'severity' must be a string, got {severity!r}")
            p = p.get("pattern")
        if not isinstance(p, str) or not p:
            raise InvalidArgument(f"tail_and_analyze 'patterns': each must be a non-empty string, got {p!r}")
        if len(p) > MAX_PATTERN_CHARS:
            raise InvalidArgument(f"tail_and_analyze 'patterns': a pattern may have at most {MAX_PATTERN_CHARS} characters")
        rx = _compile(p)
        if rx.programsize > MAX_PROGRAM_SIZE:
            raise InvalidArgument(f"tail_and_analyze 'patterns': {p[:80]!r} compiles to {rx.programsize} RE2 "
                                  f"instructions, more than {MAX_PROGRAM_SIZE} (large counted repetitions "
                                  "such as x{999} or long literals cost time on every line)")
        out.append((rx, p, severity.upper() if severity else None))
    total = sum(rx.programsize for rx, _, _ in out)
    if total > MAX_TOTAL_PROGRAM_SIZE:
        raise InvalidArgument(f"tail_and_analyze 'patterns': together they compile to {total} RE2 instructions, "
                              f"more than {MAX_TOTAL_PROGRAM_SIZE}")
    return out


def _number(args: dict[str, Any], name: str, default: Any, lo: float, hi: float, integer: bool) -> Any:
    v = args.get(name, default)
    if v is None:
        return None
    types = (int,) if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, types) or not lo <= v <= hi:
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(f"tail_and_analyze {name!r} must be {kind} in {lo}..{hi}, got {v!r}")
    return v


class _Follower:
    """An open log file read in blocks into complete lines; notices rotation
    (the path names another file) and truncation (the file got shorter)."""

    def __init__(self, path: str, from_beginning: bool, ctx: Context) -> None:
        self.path = path
        self.roots = data_dirs(ctx)
        self.f = self._open()
        st = os.fstat(self.f.fileno())
        self.ident = (st.st_dev, st.st_ino)
        self.buf = b""
        self.line_number = 0
        if not from_beginning:
            self._skip_existing(ctx)

    def _skip_existing(self, ctx: Context) -> None:
        """Count the complete lines already there (so line numbers stay true) and
        start after the last one; a partial last line is kept to be completed."""
        last_nl, pos = -1, 0
        while not ctx.cancelled:
            block = self.f.read(_BLOCK * 16)
            if not block:
                break
            self.line_number += block.count(b"\n")
            i = block.rfind(b"\n")
            if i >= 0:
                last_nl = pos + i
            pos += len(block)
        self.f.seek(last_nl + 1)

    def _open(self) -> Any:
        """The file, through the one gate for caller-named files (--data-dir, regular files only)."""
        return open_data_file(self.path, self.roots, where="tail_and_analyze 'log_path'", buffering=0)

    def close(self) -> None:
        self.f.close()

    def read_lines(self, budget: int = _READ_BUDGET) -> list[tuple[int, str]]:
        """Complete lines available now (up to about ``budget`` bytes)."""
        lines: list[tuple[int, str]] = []
        read = 0
        while read < budget:
            block = self.f.read(_BLOCK)
            if not block:
                break
            read += len(block)
            parts = (self.buf + block).split(b"\n")
            self.buf = parts.pop()
            if len(self.buf) > _MAX_LINE:  # a runaway line: cut it rather than grow without bound
                parts.append(self.buf[:_MAX_LINE])
                self.buf = b""
            for raw in parts:
                self.line_number += 1
                lines.append((self.line_number, raw.rstrip(b"\r").decode("utf-8", "replace")))
        return lines

    def check_rotation(self) -> tuple[str | None, list[tuple[int, str]]]:
        """Call when ``read_lines`` found nothing. (None, lines): the old file still
        had lines, analyse them and call again; ("rotated", []) once the old
        file is finished and the new one open; ("truncated", []); (None, []):
        nothing changed. A missing path (renamed, not yet recreated) keeps the
        old file."""
        try:
            st = os.stat(self.path)
        except OSError:  # missing, or mid-rename (a component swapped): keep the old file for now
            return None, []
        if (st.st_dev, st.st_ino) != self.ident:
            # Finish the old file first (a writer may have appended after our
            # last read), a budget at a time, before switching to the new one.
            rest = self.read_lines()
            if not rest and self.buf:
                self.line_number += 1
                rest = [(self.line_number, self.buf.rstrip(b"\r").decode("utf-8", "replace"))]
                self.buf = b""
            if rest:
                return None, rest
            try:
                new = self._open()
            except NotFound:
                return None, []
            self.f.close()
            self.f, self.buf, self.line_number = new, b"", 0
            nst = os.fstat(new.fileno())
            self.ident = (nst.st_dev, nst.st_ino)
            return "rotated", rest
        if os.fstat(self.f.fileno()).st_size < self.f.tell():
            self.f.seek(0)
            self.buf, self.line_number = b"", 0
            return "truncated", []
        return None, []


@dataclass(repr=False, eq=False)
class TailArgs:
    log_path: Annotated[str, Param("the log file", min_length=1)]
    patterns: Annotated[list[str | dict[str, str]] | dict[str, str] | str, Param(
        "regexes, or {\"pattern\", \"severity\"} maps")] | None = None
    context_lines: Annotated[int, Param("lines of context around a match", ge=0, le=100)] = 2
    from_beginning: Annotated[bool, Param("read the existing lines first")] = False
    max_matches: Annotated[int, Param("stop after this many matches", ge=1, le=10**12)] | None = None
    poll_interval: Annotated[int | float, Param("seconds between checks of a quiet file", ge=0.005, le=5)] = 0.1


@registry.command("tail_and_analyze", extra="ignore")
def tail_and_analyze(declared: TailArgs, ctx: Context) -> Iterator[Any]:
    """Follow ``log_path`` and stream matches; see the module docstring."""
    args = vars(declared)  # the checked arguments, every one present (defaults filled in)
    path = args.get("log_path")
    if not isinstance(path, str) or not path:
        raise InvalidArgument(f"tail_and_analyze 'log_path' must be a non-empty string, got {path!r}")
    # (opened by _Follower through snakepit_bridge._files: --data-dir, regular files only)
    patterns = _patterns(args.get("patterns"))
    program = sum(rx.programsize for rx, _, _ in patterns)
    match_chars = LINE_WORK // program  # a line is matched on this many characters at most (bounded work per line)
    n_context = _number(args, "context_lines", 2, 0, 100, True)
    max_matches = _number(args, "max_matches", None, 1, 10**12, True)
    poll = float(_number(args, "poll_interval", 0.1, 0.005, 5, False))
    from_beginning = bool(args.get("from_beginning", False))
    started = time.monotonic()
    follower = _Follower(path, from_beginning, ctx)
    try:
        yield {"event": "started", "log_path": path, "line_number": follower.line_number,
               "from_beginning": from_beginning}
        before: collections.deque[str] = collections.deque(maxlen=n_context)
        pending: collections.deque[tuple[dict[str, Any], list[str]]] = collections.deque()
        matches = lines_read = rotations = 0
        stopped = None

        def flush(all_: bool) -> Iterator[dict[str, Any]]:
            while pending and (all_ or len(pending[0][1]) >= n_context):
                yield pending.popleft()[0]

        work = 0

        def halted() -> bool:
            """Checked every _CHECK_WORK units of search: cancelled, or at the deadline."""
            nonlocal work
            work = 0
            remaining = ctx.time_remaining()
            return ctx.cancelled or (remaining is not None and remaining <= _DEADLINE_MARGIN)

        def analyze(batch: list[tuple[int, str]]) -> Iterator[dict[str, Any]]:
            """Match the lines; returns early (the main loop then stops) when
            cancelled or at the deadline, checked between lines and patterns."""
            nonlocal matches, lines_read, work
            for number, line in batch:
                if work >= _CHECK_WORK and halted():
                    return
                lines_read += 1
                for _, after in pending:
                    if len(after) < n_context:
                        after.append(line)
                yield from flush(False)
                if max_matches is None or matches < max_matches:
                    target = line if len(line) <= match_chars else line[:match_chars]
                    for rx, text, sev in patterns:
                        if work >= _CHECK_WORK and halted():
                            return
                        work += rx.programsize * (len(target) + 1)
                        if rx.search(target):
                            matches += 1
                            ts = parse_timestamp(line)
                            chunk: dict[str, Any] = {
                                "event": "match", "log_line": line, "line_number": number,
                                "pattern_matched": text, "severity": severity_of(line, text, sev),
                                "timestamp": ts or datetime.now(timezone.utc).isoformat(),
                                "timestamp_source": "line" if ts else "seen",
                                "context_lines": {"before": list(before), "after": []},
                            }
                            pending.append((chunk, chunk["context_lines"]["after"]))
                            yield from flush(False)
                            break
                before.append(line)

        while not ctx.cancelled:
            if max_matches is not None and matches >= max_matches and not pending:
                stopped = "max_matches"
                break
            remaining = ctx.time_remaining()
            if remaining is not None and remaining <= _DEADLINE_MARGIN:
                stopped = "deadline"
                break
            batch = follower.read_lines()
            if batch:
                yield from analyze(batch)
                continue
            yield from flush(True)  # the file is quiet: send what we have
            event, rest = follower.check_rotation()
            if rest:
                yield from analyze(rest)
                continue
            if event:
                rotations += 1
                before.clear()
                yield {"event": event, "log_path": path, "line_number": follower.line_number}
                continue
            wait = poll if remaining is None else max(0.0, min(poll, remaining - _DEADLINE_MARGIN))
            if ctx.wait(wait):
                break
        if ctx.cancelled:
            return
        yield from flush(True)
        yield ctx.final({"stopped": stopped, "matches": matches, "lines_read": lines_read, "rotations": rotations,
                         "elapsed_ms": round((time.monotonic() - started) * 1000, 3)})
    finally:
        follower.close()
