"""batch_inference: run a real (small, linear) model over a list of items.

Contract
--------
Arguments: ``batch_items`` (list, required): strings (or ``{"text": str}``)
for a text model, numeric vectors for a ``linear_v1`` model; ``model_path``
(optional): a ``.npz`` weights file in the format documented in
:mod:`snakepit_bridge.models.linear`; without it, the shipped sentiment model
(labels negative / neutral / positive). ``probabilities`` (bool, or 0 / 1; default
true): include every label's probability in the item chunks.

Streams one chunk per item, in order: ``{"index", "item", "prediction",
"confidence", "probabilities"}``; an item the model cannot take becomes a
per-item error chunk (``error`` set, data ``{"index", "item"}``) and the stream
goes on. The final chunk is the summary: ``{"count", "predicted", "errors",
"class_counts" (every label), "mean_confidence" (null when nothing was
predicted), "elapsed_ms", "items_per_second", "model"}``.

A missing model file is NOT_FOUND; a malformed one (not an npz, missing keys,
wrong shapes or dtypes, an object array that would need pickle) is
INVALID_ARGUMENT naming the problem. numpy is imported on the first call, not
at start-up. A named model file is opened once, safely (see
:mod:`snakepit_bridge._files`: under a ``--data-dir``, no symlink followed at
open time, a regular file only, never blocking) and read from that open file
(``np.load`` on the file object, ``allow_pickle=False``); it is never reopened
by name. Loaded models are cached (keyed by path, device, inode, size and
mtime, so an edited or replaced file is reloaded).
"""
from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Annotated, Any

from .._files import data_dirs, open_data_file
from ..context import Context
from ..errors import FailedPrecondition, InvalidArgument
from ..params import Param
from ..registry import Registry

if TYPE_CHECKING:
    from ..models.linear import LinearModel

registry = Registry()

_MAX_ITEMS = 1_000_000


_CACHE_SIZE = 8
_cache: collections.OrderedDict[tuple[Any, ...], LinearModel] = collections.OrderedDict()
_cache_lock = threading.Lock()


def get_model(model_path: str | None, roots: tuple[str, ...] = ()) -> LinearModel:
    """The model for ``model_path`` (the shipped default when None), cached.
    A named path must be a regular file under one of ``roots`` (--data-dir); it
    is opened once through :mod:`snakepit_bridge._files` and read from that
    open file only (never reopened by name)."""
    try:
        import numpy  # noqa: F401 - only to give a clear error when it is missing
    except ImportError:
        raise FailedPrecondition("batch_inference needs numpy: pip install 'snakepit-bridge[numpy]'") from None
    from ..models import DEFAULT_MODEL_PATH
    from ..models.linear import load_model

    if model_path is None:
        f: IO[bytes] = open(DEFAULT_MODEL_PATH, "rb")  # the shipped file: trusted, not caller-named
        name = str(DEFAULT_MODEL_PATH)
    elif isinstance(model_path, str) and model_path:
        f = open_data_file(model_path, roots, where="batch_inference 'model_path'")
        name = model_path
    else:
        raise InvalidArgument(f"batch_inference 'model_path' must be a non-empty string, got {model_path!r}")
    with f:
        st = os.fstat(f.fileno())
        # Keyed by the file itself (device, inode) and its size and mtime: an edited file is loaded afresh.
        key = (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with _cache_lock:
            model = _cache.get(key)
            if model is not None:
                _cache.move_to_end(key)
                return model
        model = load_model(f, name=name)
    with _cache_lock:
        _cache[key] = model
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return model


@registry.command("batch_inference", extra="ignore")
def batch_inference(
    ctx: Context, *,
    batch_items: Annotated[list[Any], Param("strings or {\"text\": str} (text model), numeric vectors "
                                            "(linear_v1 model)", max_length=_MAX_ITEMS)],
    model_path: Annotated[str, Param("a .npz weights file; the shipped sentiment model when left out",
                                     min_length=1)] | None = None,
    # 0 and 1 too: Snakepit 0.3's bridge read this flag with bool().
    probabilities: Annotated[bool | Annotated[int, Param(ge=0, le=1)],
                             Param("every label's probability in the item chunks (0 and 1 too)")] = True,
) -> Iterator[Any]:
    """One prediction chunk per item, then a summary; see the module docstring."""
    started = time.monotonic()
    items = batch_items
    if not isinstance(items, list):
        raise InvalidArgument(f"batch_inference 'batch_items' must be a list of items, got {items!r:.80}")
    if len(items) > _MAX_ITEMS:
        raise InvalidArgument(f"batch_inference 'batch_items' holds {len(items)} items, more than {_MAX_ITEMS}")
    with_probs = bool(probabilities)
    model = get_model(model_path, data_dirs(ctx))
    ctx.log.debug("batch_inference model", **model.describe(), items=len(items))
    counts = dict.fromkeys(model.labels, 0)
    confidence_sum, errors = 0.0, 0
    for index, item in enumerate(items):
        if ctx.cancelled:
            return
        try:
            label, confidence, probs = model.predict(item)
        except ValueError as exc:
            errors += 1
            yield ctx.error(f"batch_inference item {index}: {exc}", index=index, item=item)
            continue
        counts[label] += 1
        confidence_sum += confidence
        chunk = {"index": index, "item": item, "prediction": label, "confidence": confidence}
        if with_probs:
            chunk["probabilities"] = probs
        yield chunk
    predicted = len(items) - errors
    elapsed = time.monotonic() - started
    yield ctx.final({
        "count": len(items), "predicted": predicted, "errors": errors, "class_counts": counts,
        "mean_confidence": confidence_sum / predicted if predicted else None,
        "elapsed_ms": round(elapsed * 1000, 3),
        "items_per_second": round(len(items) / elapsed, 1) if elapsed > 0 else None,
        "model": model.describe(),
    })
