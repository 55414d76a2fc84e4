"""Files a caller may name: regular files under the operator's ``--data-dir``s.

The built-ins that read a file a caller names (``process_large_dataset``
``file_path``, ``tail_and_analyze`` ``log_path``, ``batch_inference``
``model_path``) go through :func:`open_data_file` and nothing else:

* with no ``--data-dir`` every file argument is refused (PERMISSION_DENIED,
  the message names the flag): a caller reads nothing the operator did not name;
* the path is resolved (``os.path.realpath``: ``..`` and symlinks followed)
  and must then lie under one of the resolved data directories, so neither
  ``../../etc/shadow`` nor a symlink inside a data dir can reach out;
* ``/proc``, ``/sys`` and ``/dev`` are refused even under a data dir named ``/``;
* only a regular file is opened: the path is ``stat``-ed first (a FIFO or a
  device is refused before anything could block), and then opened with
  ``O_NONBLOCK | O_NOFOLLOW`` and checked again on the descriptor, so a file
  swapped for a FIFO or a symlink in between cannot block or escape either.
"""
from __future__ import annotations

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
    real = os.path.realpath(path)
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


def open_data_file(path: Any, roots: tuple[str, ...], *, where: str, buffering: int = -1) -> IO[bytes]:
    """Open ``path`` for reading in binary mode after :func:`resolve`; the
    descriptor is checked to be the same regular file."""
    real, st = resolve(path, roots, where=where)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NotFound(f"{where}: no such file {path!r}") from None
    except OSError as exc:
        raise _denied(where, f"cannot open {path!r}: {exc.strerror}") from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise InvalidArgument(f"{where} changed while being opened (not the same regular file): {path!r}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise
