"""Files a caller may name: regular files under the operator's ``--data-dir``s.

The built-ins that read a file a caller names (``process_large_dataset``
``file_path``, ``tail_and_analyze`` ``log_path``, ``batch_inference``
``model_path``) go through :func:`open_data_file` and nothing else, and use
the file object it returns (never reopening the path by name):

* with no ``--data-dir`` every file argument is refused (PERMISSION_DENIED,
  the message names the flag): a caller reads nothing the operator did not name;
* the path is resolved (``os.path.realpath``: ``..`` and symlinks followed)
  and must then lie under one of the resolved data directories, so neither
  ``../../etc/shadow`` nor a symlink inside a data dir can reach out;
  ``/proc``, ``/sys`` and ``/dev`` are refused even under a data dir named ``/``;
* the resolved path is then opened without races: the data directory is
  opened (``O_DIRECTORY``) and each component below it is opened relative to
  its parent's descriptor with ``O_NOFOLLOW`` (``O_DIRECTORY`` for the
  directories), so a component swapped for a symlink after the check (a
  ``rename`` race) is refused, never followed: no symlink is followed below a
  data dir at open time, and no ``..`` is walked;
* the last component is opened ``O_NONBLOCK | O_NOFOLLOW`` and ``fstat``-ed:
  only a regular file is served (a directory, FIFO, socket or device is
  refused, and opening a FIFO non-blocking cannot block).
"""
from __future__ import annotations

import errno
import os
import stat
from typing import IO, Any

from .errors import BridgeError, InvalidArgument, NotFound

__all__ = ["FLAG", "data_dirs", "open_data_file", "resolve"]

FLAG = "--data-dir"
_NEVER = ("/proc", "/sys", "/dev")


def data_dirs(ctx: Any) -> tuple[str, ...]:
    """The data directories of the worker running ``ctx`` (none without one)."""
    dispatcher = getattr(ctx, "dispatcher", None)
    config = getattr(dispatcher, "config", None)
    return tuple(getattr(config, "data_dirs", ()) or ())


def _denied(where: str, why: str) -> BridgeError:
    return BridgeError(f"{where}: {why}", code="PERMISSION_DENIED")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve(path: Any, roots: tuple[str, ...], *, where: str) -> tuple[str, os.stat_result]:
    """``path`` resolved, checked (see the module docstring) and stat-ed.
    ``where`` names the argument in errors (``"tail_and_analyze 'log_path'"``)."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise InvalidArgument(f"{where} must be a non-empty path string, got {path!r:.80}")
    if not roots:
        raise _denied(where, f"file access is off; start the worker with {FLAG} DIR to allow files under DIR")
    try:
        real = os.path.realpath(path)
    except OSError as exc:  # a component changed while it was being resolved (a rename race), or a loop
        raise _walk_error(where, path, exc if exc.errno != errno.EINVAL else OSError(errno.ELOOP, "")) from None
    if any(_under(real, never) for never in _NEVER):
        raise _denied(where, f"{path!r} is under /proc, /sys or /dev, which are never served")
    if not any(_under(real, root) for root in roots):
        raise _denied(where, f"{path!r} is outside the data directories ({FLAG})")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise NotFound(f"{where}: no such file {path!r}") from None
    except OSError as exc:
        raise _denied(where, f"cannot stat {path!r}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"{where} is a directory: {path!r}")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{where} is not a regular file: {path!r}")
    return real, st


def _walk_error(where: str, path: str, exc: OSError) -> BridgeError:
    """A clear error for an ``os.open`` that failed during the walk (no raw OSError text)."""
    if exc.errno == errno.ENOENT:
        return NotFound(f"{where}: no such file {path!r}")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return _denied(where, f"{path!r} changed while being opened: a symlink below the data directories ({FLAG}) "
                              "is never followed")
    why = exc.strerror or "cannot be opened"
    return _denied(where, f"cannot open {path!r}: {why}")


# O_PATH (Linux) opens a directory to walk through without needing read permission on it.
_DIR_FLAGS = (getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
              | getattr(os, "O_CLOEXEC", 0))
_FILE_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_NOCTTY", 0))


def _open_below(real: str, root: str, where: str, path: str) -> int:
    """A descriptor for ``real`` (a resolved path under ``root``), opened one
    component at a time from ``root`` with no symlink followed."""
    parts = [p for p in os.path.relpath(real, root).split(os.sep) if p not in ("", ".")] if real != root else []
    if ".." in parts:  # cannot happen for a resolved path under root; refuse rather than walk up
        raise _denied(where, f"{path!r} is outside the data directories ({FLAG})")
    try:
        fd = os.open(root, _DIR_FLAGS & ~getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise _walk_error(where, path, exc) from None
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            try:
                nxt = os.open(name, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _walk_error(where, path, exc) from None
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_data_file(path: Any, roots: tuple[str, ...], *, where: str, buffering: int = -1) -> IO[bytes]:
    """Open ``path`` for reading in binary mode (see the module docstring):
    checked with :func:`resolve`, then opened below its data directory with no
    symlink followed, and checked on the descriptor to be a regular file."""
    real, _ = resolve(path, roots, where=where)
    root = max((r for r in roots if _under(real, r)), key=len)
    fd = _open_below(real, root, where, path)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"{where} is a directory: {path!r}")
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{where} is not a regular file: {path!r}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise
