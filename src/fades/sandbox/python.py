"""Runner for Python functions, executed by the shared Python runtime component.

Each invocation gets a fresh component instance (about a millisecond once the compiled
runtime is cached). The FDS1 blob is written to a private directory in RAM-backed storage
when there is one, and that directory alone is preopened read-only as ``/input``: the guest
reads the blob with one ``readinto``, so bulk data never crosses wasmtime's per-element
component marshalling. The guest is granted that read-only input, bounded stdout/stderr
capture, clocks and randomness (CPython needs them), and nothing else: no other files, no
sockets, no environment, no arguments.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import component

from fades.errors import (
    FunctionCrashed,
    MemoryLimitExceeded,
    SandboxError,
    SandboxViolation,
    TimeLimitExceeded,
)
from fades.functions.artifact import Artifact
from fades.sandbox import engine
from fades.sandbox.base import Limits, LogBuffer, SandboxResult

#: The runtime cannot run below this much linear memory: its initial heap snapshot takes
#: about 12.4 MiB and it starts at 14 MiB; 16 MiB (the seeds' smallest unikernel) leaves
#: room for some 130 k readings.
MIN_MEMORY_MIB = 16

_NETWORK_MODULES = {"socket", "_socket", "ssl", "_ssl", "select", "selectors", "asyncio"}


def _scratch_dir() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class PythonSandbox:
    """Runs ``python`` artifacts on a verified runtime artifact."""

    def __init__(self, runtime: Artifact) -> None:
        self.runtime = runtime
        self._linker: component.Linker | None = None

    def _component(self) -> tuple[component.Component, bool]:
        comp, cached = engine.load_compiled(
            component.Component, self.runtime.payload, self.runtime.payload_sha256
        )
        if self._linker is None:
            linker = component.Linker(engine.engine())
            linker.add_wasip2()
            self._linker = linker
        return comp, cached

    def warm(self) -> None:
        """Load (or compile and cache) the runtime now rather than on the first task."""
        self._component()

    def open(self, artifact: Artifact, limits: Limits) -> PythonSession:
        """A live instance for ``artifact``: one invocation (ephemeral) or many (persistent)."""
        if limits.memory_mib < MIN_MEMORY_MIB:
            raise MemoryLimitExceeded(
                limits.memory_mib,
                detail=f"the Python runtime needs at least {MIN_MEMORY_MIB} MiB to start",
            )
        return PythonSession(self, artifact, limits)

    def run(self, artifact: Artifact, blob: bytes | bytearray, limits: Limits) -> SandboxResult:
        """Run once in a fresh instance."""
        with self.open(artifact, limits) as session:
            return session.invoke(blob)


class PythonSession:
    """One runtime instance bound to one function. Not thread-safe; use from one thread."""

    def __init__(self, sandbox: PythonSandbox, artifact: Artifact, limits: Limits) -> None:
        t0 = time.perf_counter()
        comp, self.cached = sandbox._component()
        assert sandbox._linker is not None
        self.artifact, self.limits = artifact, limits
        self._source = artifact.payload.decode()
        self._tmp = tempfile.TemporaryDirectory(prefix="fades-in-", dir=_scratch_dir())
        self._input = os.path.join(self._tmp.name, "data.fds")
        self.logs = LogBuffer()
        store = wasmtime.Store(engine.engine())
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_epoch_deadline(engine.ticks_for(limits.time_budget_ms))
        wasi = wasmtime.WasiConfig()
        wasi.preopen_dir(self._tmp.name, "/input", False)
        wasi.stdout_custom = self.logs.write
        wasi.stderr_custom = self.logs.write
        store.set_wasi(wasi)
        try:
            instance = sandbox._linker.instantiate(store, comp)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            self._tmp.cleanup()
            raise _translate_trap(exc, limits) from None
        run = instance.get_func(store, "run")
        assert run is not None
        self._store, self._run = store, run
        self.start_s = time.perf_counter() - t0
        self.invocations = 0

    def __enter__(self) -> PythonSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    def invoke(self, blob: bytes | bytearray) -> SandboxResult:
        """Run the function on ``blob``; the time budget applies to each invocation."""
        t0 = time.perf_counter()
        with open(self._input, "wb") as f:
            f.write(blob)
        t_write = time.perf_counter() - t0
        store, limits = self._store, self.limits
        store.set_epoch_deadline(engine.ticks_for(limits.time_budget_ms))
        t1 = time.perf_counter()
        try:
            reply = self._run(store, self._source, self.artifact.entry)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise _translate_trap(exc, limits) from None
        t2 = time.perf_counter()
        if reply.tag != "ok":
            raise _translate_guest_error(json.loads(reply.payload), limits, self.logs.text())
        out: dict[str, Any] = json.loads(reply.payload)
        t3 = time.perf_counter()
        g = out["timing"]
        start = (self.start_s if self.invocations == 0 else 0.0) + g["load"]
        self.invocations += 1
        return SandboxResult(
            value=out["result"],
            timing={
                "start": start,
                "transfer": t_write + g["read"],
                "compute": g["compute"],
                # what the guest did not account for is the call/return path plus encoding
                "result": g["encode"] + (t3 - t2) + max(0.0, (t2 - t1) - sum(g.values())),
            },
            bytes_in=len(blob),
            bytes_out=len(reply.payload),
            compiled_cached=self.cached,
            logs=self.logs.text(),
        )


def _translate_trap(exc: wasmtime.WasmtimeError | wasmtime.Trap, limits: Limits) -> SandboxError:
    text = str(exc)
    if "interrupt" in text:
        return TimeLimitExceeded(limits.time_budget_ms)
    if "exceeds memory limits" in text:
        return MemoryLimitExceeded(limits.memory_mib)
    trap = next((ln.strip() for ln in text.splitlines() if "wasm trap" in ln), "")
    if "abort" in text:
        # CPython aborts (rather than raising MemoryError) when an allocation fails inside
        # the interpreter itself; a Python function cannot otherwise call abort().
        return MemoryLimitExceeded(limits.memory_mib, detail="the interpreter aborted")
    return FunctionCrashed(f"the sandbox trapped: {trap or text.splitlines()[0]}")


def _translate_guest_error(err: dict[str, Any], limits: Limits, logs: str) -> SandboxError:
    kind, message = err.get("type", "Exception"), err.get("message", "")
    tb = err.get("traceback", "")
    if kind == "MemoryError":
        return MemoryLimitExceeded(limits.memory_mib, traceback=tb)
    if kind == "ModuleNotFoundError" and any(f"'{m}'" in message for m in _NETWORK_MODULES):
        return SandboxViolation(
            f"the function tried to use the network ({kind}: {message}); "
            "sandboxes are granted no network access",
            traceback=tb,
        )
    if kind in {"FileNotFoundError", "PermissionError", "OSError", "NotADirectoryError"}:
        return SandboxViolation(
            f"the function tried to use the file system ({kind}: {message}); "
            "sandboxes are granted no file system",
            traceback=tb,
        )
    detail = f"{kind}: {message}" if message else kind
    return FunctionCrashed(f"the function raised {detail}", traceback=tb, logs=logs or None)
