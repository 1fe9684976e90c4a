"""Where fades keeps its files.

``FADES_HOME`` (default ``~/.fades``) holds a node's state: keys, trusted keys, artifacts and
its SQLite databases. ``FADES_CACHE`` (default ``~/.cache/fades``) holds rebuildable things:
the built Python runtime and compiled sandboxes, shared by every node on the machine.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("FADES_HOME", Path.home() / ".fades")).expanduser()


def cache() -> Path:
    return Path(os.environ.get("FADES_CACHE", Path.home() / ".cache" / "fades")).expanduser()
