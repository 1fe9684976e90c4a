"""WebAssembly sandboxes: a fresh, capped wasmtime instance per invocation.

:class:`Sandboxes` picks the runner by artifact kind: ``core`` modules run directly,
``python`` functions run on the node's verified Python runtime component. By default every
sandbox runs in a worker process that the node kills when the task overruns its time budget
or its host memory (:mod:`fades.sandbox.procs`); ``HostLimits(mode="inprocess")`` runs them
in the calling thread instead (benchmarks, and where blocking host calls cannot matter).
"""

from __future__ import annotations

import contextlib
import threading
import weakref

from fades.errors import ArtifactError, SandboxError
from fades.functions.artifact import PYTHON_ABI, Artifact
from fades.functions.store import FunctionStore
from fades.sandbox import engine
from fades.sandbox.base import HostLimits, Limits, SandboxResult, Session
from fades.sandbox.core import CoreSandbox
from fades.sandbox.procs import ProcSession, WorkerPool
from fades.sandbox.python import MIN_MEMORY_MIB, PythonSandbox

__all__ = [
    "MIN_MEMORY_MIB",
    "CoreSandbox",
    "HostLimits",
    "Limits",
    "PythonSandbox",
    "SandboxResult",
    "Sandboxes",
]


class Sandboxes:
    """The sandbox runners of one node, fed by its function store.

    Args:
        functions: the node's verified artifact store.
        workers: worker processes for one-shot tasks (one per orchestrator worker thread).
        host: node-wide bounds; default :meth:`HostLimits.from_env`.
    """

    def __init__(
        self, functions: FunctionStore, workers: int = 2, host: HostLimits | None = None
    ) -> None:
        self.functions = functions
        self.host = host if host is not None else HostLimits.from_env()
        self.core = CoreSandbox(self.host)
        self._python: PythonSandbox | None = None
        self._workers = workers
        self._pool_obj: WorkerPool | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def _pool(self) -> WorkerPool | None:
        """The worker pool, started on first use (None in-process)."""
        if self.host.mode != "process":
            return None
        with self._lock:
            if self._pool_obj is None:
                if self._closed:
                    raise SandboxError("the node's sandboxes are shut down")
                pool = self._pool_obj = WorkerPool(self._workers, self.host)
                weakref.finalize(self, pool.close)  # dropped without close(): no stray workers
            return self._pool_obj

    def python(self) -> PythonSandbox:
        runtime = self.functions.runtime(PYTHON_ABI)
        if self._python is None or self._python.runtime.digest != runtime.digest:
            self._python = PythonSandbox(runtime, self.host)
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

    def _runtime(self, artifact: Artifact) -> Artifact | None:
        return self.python().runtime if artifact.kind == "python" else None

    def open(self, artifact: Artifact, limits: Limits, *, restore: bytes | None = None) -> Session:
        """A persistent session (in its own worker process, unless in-process); ``restore``:
        a snapshot to put back into it before its first invocation."""
        if self.host.mode == "process":
            return ProcSession(self.host, artifact, self._runtime(artifact), limits, restore)
        session: Session
        if artifact.kind == "core":
            session = self.core.open(artifact, limits)
        else:
            session = self.python().open(artifact, limits)
        if restore is not None:
            try:
                session.restore(restore)
            except BaseException:
                session.close()
                raise
        return session

    def run(self, artifact: Artifact, blob: bytes | bytearray, limits: Limits) -> SandboxResult:
        """One invocation in a fresh instance, within ``limits`` whatever the function does."""
        pool = self._pool
        if pool is not None:
            return pool.run(artifact, self._runtime(artifact), blob, limits)
        session = self.open(artifact, limits)
        try:
            return session.invoke(blob)
        finally:
            session.close()

    def warm(self) -> None:
        """Load the compiled Python runtime now (in every worker), if the node has one."""
        with contextlib.suppress(ArtifactError):
            py = self.python()
            pool = self._pool
            if pool is None:
                py.warm()
                return
            if not engine.cache_path("component", py.runtime.payload_sha256).exists():
                py.warm()  # compile once here and fill the disk cache the workers load from
            pool.warm(py.runtime)

    def worker_pids(self) -> list[int]:
        """The pool's live worker processes (empty in-process or before first use)."""
        return self._pool_obj.pids() if self._pool_obj is not None else []

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        with self._lock:
            self._closed = True
            pool, self._pool_obj = self._pool_obj, None
        if pool is not None:
            pool.close()
