"""WebAssembly sandboxes: a fresh, capped wasmtime instance per invocation.

:class:`Sandboxes` picks the runner by artifact kind: ``core`` modules run directly,
``python`` functions run on the node's verified Python runtime component.
"""

from __future__ import annotations

import contextlib

from fades.errors import ArtifactError
from fades.functions.artifact import PYTHON_ABI, Artifact
from fades.functions.store import FunctionStore
from fades.sandbox.base import Limits, SandboxResult, Session
from fades.sandbox.core import CoreSandbox
from fades.sandbox.python import MIN_MEMORY_MIB, PythonSandbox

__all__ = ["MIN_MEMORY_MIB", "CoreSandbox", "Limits", "PythonSandbox", "SandboxResult", "Sandboxes"]


class Sandboxes:
    """The sandbox runners of one node, fed by its function store."""

    def __init__(self, functions: FunctionStore) -> None:
        self.functions = functions
        self.core = CoreSandbox()
        self._python: PythonSandbox | None = None

    def python(self) -> PythonSandbox:
        runtime = self.functions.runtime(PYTHON_ABI)
        if self._python is None or self._python.runtime.digest != runtime.digest:
            self._python = PythonSandbox(runtime)
        return self._python

    def check(self, artifact: Artifact, limits: Limits) -> None:
        """Refuse early what cannot run: a missing runtime, a memory cap below its floor."""
        if artifact.kind == "runtime":
            raise ArtifactError(f"{artifact.name!r} is a runtime, not a function")
        if artifact.kind == "python":
            self.python()
            if limits.memory_mib < MIN_MEMORY_MIB:
                raise ArtifactError(
                    f"Python functions need memory_mib >= {MIN_MEMORY_MIB} "
                    f"(the runtime's own footprint); the task asks for {limits.memory_mib}"
                )

    def open(self, artifact: Artifact, limits: Limits) -> Session:
        if artifact.kind == "core":
            return self.core.open(artifact, limits)
        return self.python().open(artifact, limits)

    def run(self, artifact: Artifact, blob: bytes | bytearray, limits: Limits) -> SandboxResult:
        session = self.open(artifact, limits)
        try:
            return session.invoke(blob)
        finally:
            session.close()

    def warm(self) -> None:
        """Load the compiled Python runtime now, if the node has one."""
        with contextlib.suppress(ArtifactError):
            self.python().warm()
