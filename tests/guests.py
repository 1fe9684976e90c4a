"""Signed Python guest functions for tests, from source text, and sources several tests run."""

from __future__ import annotations

import textwrap

from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey


def python_artifact(name: str, source: str, key: SigningKey) -> Artifact:
    """A signed Python function artifact ``name`` from ``source`` (dedented)."""
    return create("python", name, textwrap.dedent(source).lstrip().encode(), key=key)


#: a persistent function counting its own invocations (its state: ``COUNT``)
COUNTER = """
COUNT = 0

def main(data, params):
    global COUNT
    COUNT += 1
    return {"count": COUNT, "rows": len(data["t"])}
"""

#: busy for ``params["seconds"]`` (default 1 s), then the rows it was given
SLOW = """
import time

def main(data, params):
    t0 = time.monotonic()
    while time.monotonic() - t0 < params.get("seconds", 1.0):
        pass
    return {"rows": len(data["t"])}
"""
