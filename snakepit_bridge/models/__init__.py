"""Small built-in models for ``batch_inference`` (numpy needed, imported lazily).

Nothing here is imported at bridge start-up: ``batch_inference`` imports
:mod:`snakepit_bridge.models.linear` (and so numpy) the first time it runs.
The shipped default model is ``sentiment.npz`` beside this file; see
:mod:`snakepit_bridge.models.linear` for the weights format.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL_PATH"]

#: The default sentiment model (negative / neutral / positive) shipped in the package.
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "sentiment.npz"
