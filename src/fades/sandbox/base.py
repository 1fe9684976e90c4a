"""What every sandbox runner takes and returns."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Protocol

from fades.functions.artifact import Artifact


def write_input(path: str, blob: bytes | bytearray | memoryview) -> None:
    """Put ``blob`` into the input file at ``path``, overwriting it in place.

    The file is not truncated first: on a RAM-backed directory the pages of the previous
    input are reused rather than freed and faulted in again (about 3x faster for tens of
    MB); the file is then cut to the blob's length.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        view, pos = memoryview(blob), 0
        while pos < len(view):
            pos += os.write(fd, view[pos:])
        os.ftruncate(fd, len(view))
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps for one invocation: linear memory and a wall-clock budget for the call."""

    memory_mib: int = 64
    time_budget_ms: int = 5000

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib << 20


@dataclass(frozen=True, slots=True)
class HostLimits:
    """Node-wide bounds on what one task can make the host spend (see docs/functions.md).

    Every field can be set from the environment as ``FADES_SANDBOX_<FIELD>`` (upper case),
    e.g. ``FADES_SANDBOX_MAX_RESULT_BYTES=1048576``; :meth:`from_env` reads them.
    """

    #: ``process`` (default: killable worker processes) or ``inprocess`` (benchmarks, tests).
    mode: Literal["process", "inprocess"] = "process"
    #: A result (its JSON) larger than this fails the task with ResultTooLarge.
    max_result_bytes: int = 8 << 20
    #: Error messages are cut to this many characters, tracebacks to the next one.
    max_error_chars: int = 4096
    max_traceback_chars: int = 16384
    #: Captured stdout/stderr (Python) or ``fades.log`` lines (core), per invocation.
    max_log_bytes: int = 16 << 10
    #: JSON nesting allowed in a result.
    max_result_depth: int = 100
    #: A worker is killed when the task runs this long past its time budget.
    grace_ms: int = 500
    #: A worker is killed when its anonymous RSS passes the task's memory cap plus this.
    worker_overhead_mib: int = 256
    #: A worker is replaced after this many tasks, or when idle with more anonymous RSS.
    worker_max_tasks: int = 10_000
    worker_max_idle_rss_mib: int = 384
    #: Core modules: elements per table, and tables, memories, instances per store.
    max_table_elements: int = 100_000
    max_tables: int = 8
    max_memories: int = 1
    max_instances: int = 1
    #: Python: fresh runtime instances kept ready in each worker process
    #: (:mod:`fades.sandbox.pool`): at least ``py_pool_min`` (0 turns the pool off), growing
    #: with demand up to ``py_pool_max``, and never more than ``py_pool_max_mib`` of memory.
    py_pool_min: int = 1
    py_pool_max: int = 4
    py_pool_max_mib: int = 64

    def __post_init__(self) -> None:
        if self.mode not in ("process", "inprocess"):
            raise ValueError(f"sandbox mode must be 'process' or 'inprocess', not {self.mode!r}")
        for f in fields(self):
            low = 0 if f.name.startswith("py_pool_") else 1
            if f.name != "mode" and int(getattr(self, f.name)) < low:
                raise ValueError(f"sandbox limit {f.name} must be at least {low}")
        if self.py_pool_min > self.py_pool_max:
            raise ValueError(
                f"sandbox limit py_pool_min ({self.py_pool_min}) is above "
                f"py_pool_max ({self.py_pool_max})"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> HostLimits:
        """Defaults, then ``FADES_SANDBOX_*`` variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"FADES_SANDBOX_{f.name.upper()}")
            if raw is None:
                continue
            try:
                values[f.name] = raw if f.name == "mode" else int(raw)
            except ValueError:
                raise ValueError(
                    f"FADES_SANDBOX_{f.name.upper()} must be an integer, not {raw!r}"
                ) from None
        return replace(cls(**values), **overrides)


@dataclass(slots=True)
class SandboxResult:
    """A function's result and where the time went inside the sandbox layer.

    ``timing`` keys (seconds): ``transfer`` (input into the sandbox), ``start`` (fresh
    instance, plus loading the function for Python), ``compute``, ``result`` (output back to
    the host).
    """

    value: Any
    timing: dict[str, float]
    bytes_in: int
    bytes_out: int
    compiled_cached: bool
    logs: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Session(Protocol):
    """A live, capped instance bound to one function (see ``Sandbox.open``)."""

    start_s: float
    invocations: int

    def invoke(self, blob: bytes | bytearray) -> SandboxResult:
        """Run the function once more on ``blob``."""
        ...

    def snapshot(self, limit: int | None = None) -> bytes:
        """The instance's state at an invocation boundary (at most ``limit`` bytes; default
        ``FADES_STATE_MAX_BYTES``).

        Raises:
            StateNotCapturable: part of the state cannot be captured (named).
        """
        ...

    def restore(self, state: bytes) -> None:
        """Put a snapshot back into this fresh instance (before its first invocation).

        Raises:
            CheckpointRejected: the state does not fit this function.
        """
        ...

    def close(self) -> None: ...


class Sandbox(Protocol):
    """Runs one artifact kind in a fresh, capped instance."""

    def open(self, artifact: Artifact, limits: Limits) -> Session:
        """Instantiate ``artifact`` and keep it alive (persistent functions)."""
        ...

    def run(self, artifact: Artifact, blob: bytes | bytearray, limits: Limits) -> SandboxResult:
        """Run ``artifact`` on the FDS1 ``blob``.

        Raises:
            SandboxError: the subclass says why (memory, time, violation, crash).
        """
        ...


class LogBuffer:
    """Collects a function's stdout/stderr up to a bound, so a chatty function cannot fill RAM."""

    def __init__(self, limit: int = 16 * 1024) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.truncated = False

    def write(self, data: bytes) -> None:
        room = self.limit - self._size
        if room <= 0:
            self.truncated = True
            return
        chunk = bytes(data[:room])
        self._parts.append(chunk)
        self._size += len(chunk)
        if len(data) > room:
            self.truncated = True

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        self._parts, self._size, self.truncated = [], 0, False

    def text(self) -> str:
        out = b"".join(self._parts).decode("utf-8", "replace")
        return out + ("\n[log truncated]" if self.truncated else "")
