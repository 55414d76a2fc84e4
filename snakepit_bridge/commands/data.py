"""Built-in data commands (placeholder, filled in by its issue)."""
from __future__ import annotations

from ..registry import Registry

registry = Registry()
