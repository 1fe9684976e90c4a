"""What every sandbox runner takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from fades.functions.artifact import Artifact


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps for one invocation: linear memory and a wall-clock budget for the call."""

    memory_mib: int = 64
    time_budget_ms: int = 5000

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib << 20


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

    def text(self) -> str:
        out = b"".join(self._parts).decode("utf-8", "replace")
        return out + ("\n[log truncated]" if self.truncated else "")
