"""Signed Python guest functions for tests, from source text."""

from __future__ import annotations

import textwrap

from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey


def python_artifact(name: str, source: str, key: SigningKey) -> Artifact:
    """A signed Python function artifact ``name`` from ``source`` (dedented)."""
    return create("python", name, textwrap.dedent(source).lstrip().encode(), key=key)
