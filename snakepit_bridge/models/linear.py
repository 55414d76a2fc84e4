"""Linear (multinomial logistic regression) models stored as numpy ``.npz``.

Weights format (a ``.npz`` archive; loaded with ``allow_pickle=False``, so an
archive holding an object array is refused):

* ``weights``: float array, shape ``(C, D)``, finite; ``C >= 2`` classes.
* ``bias``: float array, shape ``(C,)``, finite.
* ``labels``: unicode string array (numpy ``<U..``, not object), shape
  ``(C,)``, distinct.
* ``kind`` (optional, 0-d unicode array, default ``"hashed_text_v1"``):

  - ``"hashed_text_v1"``: items are strings. Features (see :func:`features`):
    lower-cased word tokens ``[a-z0-9']+``, word bigrams and character
    3-grams of each word padded with spaces, each hashed by ``zlib.crc32`` of
    its UTF-8 ``"w:word"`` / ``"b:w1 w2"`` / ``"c:abc"`` string modulo ``D``;
    bucket counts, L2-normalised.
  - ``"linear_v1"``: items are numeric vectors of length ``D``, used as is.

Prediction: ``softmax(weights @ x + bias)``; the label with the largest
probability, whose probability is the confidence.
"""
from __future__ import annotations

import math
import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import InvalidArgument, NotFound

__all__ = ["KINDS", "LinearModel", "features", "load_model"]

KINDS = ("hashed_text_v1", "linear_v1")
_TOKEN = re.compile(r"[a-z0-9']+")
_MAX_ENTRIES = 50_000_000  # weights larger than this (200 MB of float32) are refused


def features(text: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashed feature buckets of ``text``: (sorted unique indices, L2-normalised counts)."""
    words = _TOKEN.findall(text.lower())
    grams = [f"w:{w}" for w in words]
    grams += [f"b:{a} {b}" for a, b in zip(words, words[1:], strict=False)]  # adjacent pairs
    for w in words:
        padded = f" {w} "
        grams += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
    if not grams:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    idx = np.fromiter((zlib.crc32(g.encode()) % dim for g in grams), dtype=np.int64, count=len(grams))
    uniq, counts = np.unique(idx, return_counts=True)
    values = counts.astype(np.float64)
    return uniq, values / math.sqrt(float(values @ values))


@dataclass(frozen=True)
class LinearModel:
    """A loaded model; immutable, so one instance can serve concurrent calls."""

    name: str
    kind: str
    weights: np.ndarray  # (C, D) float64
    bias: np.ndarray  # (C,)
    labels: tuple[str, ...]

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "labels": list(self.labels), "features": self.dim}

    def predict(self, item: Any) -> tuple[str, float, dict[str, float]]:
        """(label, confidence, probability per label) for one item; raises
        ValueError naming what is wrong with an item this model cannot take."""
        if self.kind == "hashed_text_v1":
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                item = item["text"]
            if not isinstance(item, str):
                raise ValueError(f"this model takes strings (or {{'text': str}}), got {type(item).__name__}")
            idx, vals = features(item, self.dim)
            logits = self.weights[:, idx] @ vals + self.bias
        else:
            x = _vector(item, self.dim)
            logits = self.weights @ x + self.bias
        logits = logits - logits.max()
        probs = np.exp(logits)
        probs /= probs.sum()
        best = int(np.argmax(probs))
        return self.labels[best], float(probs[best]), {lab: float(p) for lab, p in zip(self.labels, probs, strict=True)}


def _vector(item: Any, dim: int) -> np.ndarray:
    if not isinstance(item, Sequence) or isinstance(item, (str, bytes)):
        raise ValueError(f"this model takes numeric vectors of length {dim}, got {type(item).__name__}")
    if len(item) != dim or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in item):
        raise ValueError(f"this model takes numeric vectors of length {dim}, got {item!r:.80}")
    x = np.asarray(item, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("vector holds a non-finite value")
    return x


def load_model(source: str | Path | IO[bytes], *, arg: str = "model_path", name: str | None = None) -> LinearModel:
    """Load and validate a model; NotFound / InvalidArgument (naming ``arg``
    and the problem) for a missing or malformed file. ``source`` is a path
    (trusted: the shipped model) or a seekable binary file object already
    opened (a caller-named file, opened by :mod:`snakepit_bridge._files`): it
    is read from that object only, never reopened by name, and left open."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise NotFound(f"batch_inference {arg!r} {str(path)!r}: no such file")
        if not path.is_file():
            raise InvalidArgument(f"batch_inference {arg!r} {str(path)!r} is not a regular file")
        with open(path, "rb") as opened:
            return load_model(opened, arg=arg, name=name or str(path))
    f = source
    label = name if name is not None else str(getattr(f, "name", "<file>"))
    where = f"batch_inference {arg!r} {label!r}"
    f.seek(0)
    magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise InvalidArgument(f"{where} is a single .npy array, not a .npz archive with weights/bias/labels")
    f.seek(0)
    if not zipfile.is_zipfile(f):
        raise InvalidArgument(f"{where} is not a .npz model archive (not a zip file)")
    f.seek(0)
    try:
        archive = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidArgument(f"{where} is not a .npz model archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InvalidArgument(f"{where} is a single .npy array, not a .npz archive with weights/bias/labels")
    with archive:
        missing = [k for k in ("weights", "bias", "labels") if k not in archive.files]
        if missing:
            raise InvalidArgument(f"{where} lacks key(s) {missing} (has {sorted(archive.files)}); "
                                  "expected weights (C, D), bias (C,), labels (C,)")
        arrays: dict[str, np.ndarray] = {}
        for key in ("weights", "bias", "labels", "kind"):
            if key not in archive.files:
                continue
            try:
                arrays[key] = archive[key]
            except ValueError as exc:  # object arrays need pickle, which we refuse
                raise InvalidArgument(f"{where}: key {key!r} cannot be loaded without pickle ({exc})") from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise InvalidArgument(f"{where}: key {key!r} is corrupt ({exc})") from None
    return _validate(arrays, where, os.path.basename(label))


def _validate(a: dict[str, np.ndarray], where: str, name: str) -> LinearModel:
    kind = "hashed_text_v1"
    if "kind" in a:
        if a["kind"].dtype.kind != "U" or a["kind"].shape != ():
            raise InvalidArgument(f"{where}: 'kind' must be a 0-d string array, got {a['kind'].dtype} {a['kind'].shape}")
        kind = str(a["kind"][()])
        if kind not in KINDS:
            raise InvalidArgument(f"{where}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    w, b, labels = a["weights"], a["bias"], a["labels"]
    if w.ndim != 2 or w.dtype.kind not in "fi" or w.shape[0] < 2 or w.shape[1] < 1:
        raise InvalidArgument(f"{where}: 'weights' must be a numeric (C, D) array with C >= 2, got {w.dtype} {w.shape}")
    if w.size > _MAX_ENTRIES:
        raise InvalidArgument(f"{where}: 'weights' has {w.size} entries, more than the {_MAX_ENTRIES} allowed")
    c = w.shape[0]
    if b.shape != (c,) or b.dtype.kind not in "fi":
        raise InvalidArgument(f"{where}: 'bias' must be a numeric array of shape ({c},), got {b.dtype} {b.shape}")
    if labels.shape != (c,) or labels.dtype.kind != "U":
        raise InvalidArgument(f"{where}: 'labels' must be a string array of shape ({c},), got {labels.dtype} {labels.shape}")
    if len(set(labels.tolist())) != c:
        raise InvalidArgument(f"{where}: 'labels' must be distinct, got {labels.tolist()}")
    w, b = w.astype(np.float64), b.astype(np.float64)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise InvalidArgument(f"{where}: 'weights' and 'bias' must be finite")
    w.flags.writeable = b.flags.writeable = False
    return LinearModel(name, kind, w, b, tuple(labels.tolist()))
