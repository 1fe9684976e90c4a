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

#: The runtime cannot start below this much linear memory (its initial heap snapshot).
MIN_MEMORY_MIB = 24

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

    def run(self, artifact: Artifact, blob: bytes | bytearray, limits: Limits) -> SandboxResult:
        if limits.memory_mib < MIN_MEMORY_MIB:
            raise MemoryLimitExceeded(
                limits.memory_mib,
                detail=f"the Python runtime needs at least {MIN_MEMORY_MIB} MiB to start",
            )
        t0 = time.perf_counter()
        comp, cached = self._component()
        assert self._linker is not None
        with tempfile.TemporaryDirectory(prefix="fades-in-", dir=_scratch_dir()) as tmp:
            with open(os.path.join(tmp, "data.fds"), "wb") as f:
                f.write(blob)
            t_write = time.perf_counter() - t0
            return self._invoke(artifact, comp, cached, tmp, len(blob), limits, t_write)

    def _invoke(
        self,
        artifact: Artifact,
        comp: component.Component,
        cached: bool,
        input_dir: str,
        bytes_in: int,
        limits: Limits,
        t_write: float,
    ) -> SandboxResult:
        assert self._linker is not None
        store = wasmtime.Store(engine.engine())
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_epoch_deadline(engine.ticks_for(limits.time_budget_ms))
        logs = LogBuffer()
        wasi = wasmtime.WasiConfig()
        wasi.preopen_dir(input_dir, "/input", False)
        wasi.stdout_custom = logs.write
        wasi.stderr_custom = logs.write
        store.set_wasi(wasi)
        t0 = time.perf_counter()
        try:
            instance = self._linker.instantiate(store, comp)
            run = instance.get_func(store, "run")
            assert run is not None
            t1 = time.perf_counter()
            reply = run(store, artifact.payload.decode(), artifact.entry)
            t2 = time.perf_counter()
        except wasmtime.WasmtimeError as exc:
            raise _translate_trap(exc, limits) from None
        if reply.tag != "ok":
            raise _translate_guest_error(json.loads(reply.payload), limits, logs.text())
        out: dict[str, Any] = json.loads(reply.payload)
        t3 = time.perf_counter()
        g = out["timing"]
        host_call = t2 - t1
        return SandboxResult(
            value=out["result"],
            timing={
                "start": (t1 - t0) + g["load"],
                "transfer": t_write + g["read"],
                "compute": g["compute"],
                # what the guest did not account for is the call/return path plus encoding
                "result": g["encode"] + (t3 - t2) + max(0.0, host_call - sum(g.values())),
            },
            bytes_in=bytes_in,
            bytes_out=len(reply.payload),
            compiled_cached=cached,
            logs=logs.text(),
        )


def _translate_trap(exc: wasmtime.WasmtimeError, limits: Limits) -> SandboxError:
    text = str(exc)
    if "interrupt" in text:
        return TimeLimitExceeded(limits.time_budget_ms)
    if "exceeds memory limits" in text or "abort" in text and "malloc" in text:
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
