"""Runner for core WebAssembly modules speaking the fades-core/1 ABI.

The module exports ``memory``, ``fades_alloc(size) -> ptr`` and ``fades_run(ptr, len) -> status``
and may import only ``fades.result_f64(name_ptr, name_len, value)``,
``fades.result_json(ptr, len)`` and ``fades.log(ptr, len)``. The host asks the module for a
buffer, copies the FDS1 blob straight into its linear memory (one memmove, no marshalling),
runs it, and collects what it reported through the imports. Nothing else is importable, so
a core module has no file system, network, clock or environment at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import wasmtime

from fades.errors import FunctionCrashed, MemoryLimitExceeded, SandboxError, TimeLimitExceeded
from fades.functions.artifact import Artifact
from fades.sandbox import engine
from fades.sandbox.base import Limits, LogBuffer, SandboxResult

_F64_T = wasmtime.FuncType(
    [wasmtime.ValType.i32(), wasmtime.ValType.i32(), wasmtime.ValType.f64()], []
)
_PTR_T = wasmtime.FuncType([wasmtime.ValType.i32(), wasmtime.ValType.i32()], [])


def _read(caller: wasmtime.Caller, ptr: int, length: int) -> bytes:
    mem = caller["memory"]
    assert isinstance(mem, wasmtime.Memory)
    if ptr < 0 or length < 0 or ptr + length > mem.data_len(caller):
        raise wasmtime.Trap("fades import given an out-of-bounds buffer")
    return bytes(mem.read(caller, ptr, ptr + length))


class CoreSandbox:
    """Runs fades-core/1 modules: each ephemeral invocation in a fresh instance."""

    def open(self, artifact: Artifact, limits: Limits) -> CoreSession:
        return CoreSession(artifact, limits)

    def run(self, artifact: Artifact, blob: bytes | bytearray, limits: Limits) -> SandboxResult:
        with self.open(artifact, limits) as session:
            return session.invoke(blob)


class CoreSession:
    """One live instance of a core module. Not thread-safe; use from one thread."""

    def __init__(self, artifact: Artifact, limits: Limits) -> None:
        t0 = time.perf_counter()
        module, self.cached = engine.load_compiled(
            wasmtime.Module, artifact.payload, artifact.payload_sha256
        )
        self.artifact, self.limits = artifact, limits
        store = wasmtime.Store(engine.engine())
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_epoch_deadline(engine.ticks_for(limits.time_budget_ms))
        self._store = store
        self._result: dict[str, Any] = {}
        self._whole: list[Any] = []
        self.logs = LogBuffer()
        hosts: dict[str, tuple[wasmtime.FuncType, Callable[..., None]]] = {
            "result_f64": (_F64_T, self._result_f64),
            "result_json": (_PTR_T, self._result_json),
            "log": (_PTR_T, self._log),
        }
        imports = []
        for imp in module.imports:
            ty, fn = hosts[imp.name or ""]
            imports.append(wasmtime.Func(store, ty, fn, access_caller=True))
        self._memory: wasmtime.Memory | None = None
        try:
            instance = wasmtime.Instance(store, module, imports)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise _translate(exc, limits, store, None, "start") from None
        exports = instance.exports(store)
        mem, alloc, run = exports["memory"], exports["fades_alloc"], exports["fades_run"]
        assert isinstance(mem, wasmtime.Memory)
        assert isinstance(alloc, wasmtime.Func) and isinstance(run, wasmtime.Func)
        self._memory, self._alloc, self._run = mem, alloc, run
        self.start_s = time.perf_counter() - t0
        self.invocations = 0

    def __enter__(self) -> CoreSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release beyond the store, which Python frees."""

    def _result_f64(self, caller: wasmtime.Caller, ptr: int, length: int, value: float) -> None:
        self._result[_read(caller, ptr, length).decode("utf-8", "replace")] = value

    def _result_json(self, caller: wasmtime.Caller, ptr: int, length: int) -> None:
        try:
            self._whole[:] = [json.loads(_read(caller, ptr, length))]
        except ValueError as exc:
            raise wasmtime.Trap(f"result_json was given invalid JSON: {exc}") from None

    def _log(self, caller: wasmtime.Caller, ptr: int, length: int) -> None:
        self.logs.write(_read(caller, ptr, length) + b"\n")

    def invoke(self, blob: bytes | bytearray) -> SandboxResult:
        store, limits, mem = self._store, self.limits, self._memory
        assert mem is not None
        self._result.clear()
        self._whole.clear()
        store.set_epoch_deadline(engine.ticks_for(limits.time_budget_ms))
        stage = "transfer"
        t1 = time.perf_counter()
        try:
            ptr = self._alloc(store, len(blob))
            if not isinstance(ptr, int) or ptr <= 0 or ptr + len(blob) > mem.data_len(store):
                raise MemoryLimitExceeded(limits.memory_mib, stage="transfer", bytes=len(blob))
            mem.write(store, blob, ptr)
            t2 = time.perf_counter()
            stage = "compute"
            status = self._run(store, ptr, len(blob))
            t3 = time.perf_counter()
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise _translate(exc, limits, store, mem, stage) from None
        if status != 0:
            raise FunctionCrashed(
                f"function {self.artifact.name!r} returned error status {status}",
                logs=self.logs.text() or None,
            )
        value = self._whole[0] if self._whole else dict(self._result)
        out = json.dumps(value, separators=(",", ":"))
        t4 = time.perf_counter()
        start = self.start_s if self.invocations == 0 else 0.0
        self.invocations += 1
        return SandboxResult(
            value=value,
            timing={"start": start, "transfer": t2 - t1, "compute": t3 - t2, "result": t4 - t3},
            bytes_in=len(blob),
            bytes_out=len(out),
            compiled_cached=self.cached,
            logs=self.logs.text(),
        )


def _translate(
    exc: wasmtime.WasmtimeError | wasmtime.Trap,
    limits: Limits,
    store: wasmtime.Store,
    memory: wasmtime.Memory | None,
    stage: str,
) -> SandboxError:
    text = str(exc)
    if "interrupt" in text:
        return TimeLimitExceeded(limits.time_budget_ms, stage=stage)
    if "exceeds memory limits" in text:
        return MemoryLimitExceeded(limits.memory_mib, stage=stage)
    if memory is not None and memory.data_len(store) + (64 << 10) > limits.memory_bytes:
        # memory.grow failed at the cap and the module trapped on the consequence
        return MemoryLimitExceeded(limits.memory_mib, stage=stage)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    trap = next((ln.strip() for ln in text.splitlines() if "wasm trap" in ln), first)
    return FunctionCrashed(f"function trapped during {stage}: {trap}", stage=stage)
