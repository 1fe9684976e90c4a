"""Runner for core WebAssembly modules speaking the fades-core/1 ABI.

The module exports ``memory``, ``fades_alloc(size) -> ptr`` and ``fades_run(ptr, len) -> status``
and may import only ``fades.result_f64(name_ptr, name_len, value)``,
``fades.result_json(ptr, len)`` and ``fades.log(ptr, len)``. The host asks the module for a
buffer, copies the FDS1 blob straight into its linear memory (one memmove, no marshalling),
runs it, and collects what it reported through the imports. Nothing else is importable, so
a core module has no file system, network, clock or environment at all.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._func import enter_wasm

from fades.errors import (
    BadFunctionOutput,
    FunctionCrashed,
    MemoryLimitExceeded,
    ResultTooLarge,
    SandboxError,
    TimeLimitExceeded,
)
from fades.functions.artifact import Artifact
from fades.sandbox import core_state, engine
from fades.sandbox.base import HostLimits, Limits, LogBuffer, SandboxResult
from fades.sandbox.output import check_size, check_value, parse_json
from fades.state.seal import max_state_bytes

_I32, _F64 = wasmtime.ValType.i32(), wasmtime.ValType.f64()
_F64_T = wasmtime.FuncType([_I32, _I32, _F64], [])
_PTR_T = wasmtime.FuncType([_I32, _I32], [])
_ALLOC_T = ([_I32], [_I32])
_RUN_T = ([_I32, _I32], [_I32])


class _Sink:
    """What the host imports write into. It holds no reference to the store or the session:
    wasmtime keeps host functions alive in a global table until their store is freed, so a
    host function that reached the store would keep both alive forever (the leak of every
    core invocation before this)."""

    def __init__(self, host: HostLimits) -> None:
        self.host = host
        self.memory: wasmtime.Memory | None = None
        self.result: dict[str, float] = {}
        self.whole: list[Any] = []
        self.size = 0
        self.error: SandboxError | None = None
        self.logs = LogBuffer(host.max_log_bytes)

    def fail(self, error: SandboxError) -> wasmtime.Trap:
        self.error = error
        return wasmtime.Trap(str(error))

    def read(self, caller: wasmtime.Caller, ptr: int, length: int, cap: int) -> bytes:
        mem = self.memory
        if mem is None:
            raise self.fail(BadFunctionOutput("a fades import was called before fades_run"))
        if ptr < 0 or length < 0 or ptr + length > mem.data_len(caller):
            raise wasmtime.Trap("fades import given an out-of-bounds buffer")
        return bytes(mem.read(caller, ptr, ptr + min(length, cap)))

    def result_f64(self, caller: wasmtime.Caller, ptr: int, length: int, value: float) -> None:
        limit = self.host.max_result_bytes
        name = self.read(caller, ptr, length, limit + 1).decode("utf-8", "replace")
        if not math.isfinite(value):
            raise self.fail(
                BadFunctionOutput(f"result_f64 {name[:80]!r} is {value}; results must be finite")
            )
        if name not in self.result:  # each distinct name costs the host a dict entry
            self.size += len(name) + 24
        if self.size > limit:
            raise self.fail(ResultTooLarge(limit, what="result"))
        self.result[name] = value

    def result_json(self, caller: wasmtime.Caller, ptr: int, length: int) -> None:
        host = self.host
        if length > host.max_result_bytes:
            raise self.fail(ResultTooLarge(host.max_result_bytes, length, what="result_json"))
        data = self.read(caller, ptr, length, length)
        try:
            value = parse_json(
                data, limit=host.max_result_bytes, max_depth=host.max_result_depth,
                what="result_json",
            )  # fmt: skip
        except SandboxError as exc:
            raise self.fail(exc) from None
        self.whole[:] = [value]

    def log(self, caller: wasmtime.Caller, ptr: int, length: int) -> None:
        room = max(0, self.logs.limit - len(self.logs))
        self.logs.write(self.read(caller, ptr, length, room + 1) + b"\n")


#: Modules (payload digest, export name) whose export was found to have the right type: an
#: export's type is fixed by the module, so each instance need not ask wasmtime again (that
#: look-up builds type objects, about 20 us per export).
_TYPED: set[tuple[str, str]] = set()
_TYPED_KEEP = 4096


class I32Call:
    """A call of a core export checked to take ``n`` i32 and return one i32, without the
    per-call work of wasmtime-py's ``Func.__call__`` (it asks the engine for the function's
    type and converts every value through ``Val`` on each call: about half of a small core
    task's time in its worker). The call itself, and how a trap or a host function's error
    comes back, is wasmtime-py's own (``wasmtime_func_call`` inside its ``enter_wasm``)."""

    __slots__ = ("_func", "_n", "_params", "_result")

    def __init__(self, func: wasmtime.Func, n: int) -> None:
        self._func = func
        self._n = n
        self._params = (ffi.wasmtime_val_t * max(1, n))()
        for i in range(n):
            self._params[i].kind = ffi.WASMTIME_I32.value  # type: ignore[assignment]
        self._result = (ffi.wasmtime_val_t * 1)()

    def __call__(self, store: wasmtime.Store, *args: int) -> int:
        if len(args) != self._n:
            raise TypeError(f"this export takes {self._n} arguments, not {len(args)}")
        params = self._params
        for i, a in enumerate(args):
            if not isinstance(a, int):
                raise TypeError("expected an integer")
            params[i].of.i32 = a  # wraps to 32 bits, as wasmtime-py's Val.i32 does
        with enter_wasm(store) as trap:
            error = ffi.wasmtime_func_call(
                store._context(),
                ctypes.byref(self._func._func),
                params,
                self._n,
                self._result,
                1,
                trap,
            )
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        return int(self._result[0].of.i32)


def _check_export(obj: Any, name: str, ty: tuple[list[wasmtime.ValType], list[wasmtime.ValType]],
                  store: wasmtime.Store, module: str | None = None) -> I32Call:  # fmt: skip
    """``obj`` as a fast call, after checking that it is a function of type ``ty`` (all i32
    with one i32 result); ``module``: the module's payload digest, to check once per module."""
    if not isinstance(obj, wasmtime.Func):
        raise BadFunctionOutput(_abi(f"export {name!r} is not a function"))
    if module is not None and (module, name) in _TYPED:
        return I32Call(obj, len(ty[0]))
    ft = obj.type(store)
    if [str(p) for p in ft.params] != [str(p) for p in ty[0]] or [str(r) for r in ft.results] != [
        str(r) for r in ty[1]
    ]:
        raise BadFunctionOutput(_abi(f"export {name!r} has the wrong signature"))
    if module is not None:
        if len(_TYPED) >= _TYPED_KEEP:
            _TYPED.clear()
        _TYPED.add((module, name))
    return I32Call(obj, len(ty[0]))


def _abi(detail: str) -> str:
    return f"the module does not follow fades-core/1: {detail}"


#: A fresh instance's memory per module digest (what a snapshot is diffed against), for the
#: few most recently snapshotted modules.
_FRESH: dict[str, bytes] = {}
_FRESH_KEEP = 8


class CoreSandbox:
    """Runs fades-core/1 modules: each ephemeral invocation in a fresh instance."""

    def __init__(self, host: HostLimits | None = None) -> None:
        self.host = host or HostLimits(mode="inprocess")

    def open(self, artifact: Artifact, limits: Limits) -> CoreSession:
        return CoreSession(artifact, limits, self.host)

    def run(self, artifact: Artifact, blob: bytes | bytearray, limits: Limits) -> SandboxResult:
        with self.open(artifact, limits) as session:
            return session.invoke(blob)


class CoreSession:
    """One live instance of a core module. Not thread-safe; use from one thread."""

    def __init__(self, artifact: Artifact, limits: Limits, host: HostLimits | None = None) -> None:
        t0 = time.perf_counter()
        host = host or HostLimits(mode="inprocess")
        module, self.cached = engine.load_compiled(
            wasmtime.Module, artifact.payload, artifact.payload_sha256
        )
        self.artifact, self.limits, self.host = artifact, limits, host
        store = wasmtime.Store(engine.engine())
        store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=host.max_table_elements,
            instances=host.max_instances,
            tables=host.max_tables,
            memories=host.max_memories,
        )
        store.set_epoch_deadline(engine.ticks_for(limits.time_budget_ms))
        self._store: wasmtime.Store | None = store
        self._sink = sink = _Sink(host)
        self.logs = sink.logs
        hosts: dict[str, tuple[wasmtime.FuncType, Callable[..., None]]] = {
            "result_f64": (_F64_T, sink.result_f64),
            "result_json": (_PTR_T, sink.result_json),
            "log": (_PTR_T, sink.log),
        }
        imports = []
        try:
            for imp in module.imports:
                if imp.module != "fades" or (imp.name or "") not in hosts:
                    raise BadFunctionOutput(_abi(f"it imports {imp.module}.{imp.name}"))
                ty, fn = hosts[imp.name or ""]
                imports.append(wasmtime.Func(store, ty, fn, access_caller=True))
            try:
                instance = wasmtime.Instance(store, module, imports)
            except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
                raise _translate(exc, limits, store, None, "start", sink) from None
            exports = instance.exports(store)
            mem = exports.get("memory")
            if not isinstance(mem, wasmtime.Memory):
                what = "missing" if mem is None else f"a {type(mem).__name__.lower()}"
                raise BadFunctionOutput(_abi(f"export 'memory' is {what}, not a memory"))
            sha = artifact.payload_sha256
            alloc = exports.get("fades_alloc")
            self._alloc = _check_export(alloc, "fades_alloc", _ALLOC_T, store, sha)
            self._run = _check_export(exports.get("fades_run"), "fades_run", _RUN_T, store, sha)
            self._exports = exports  # its mutable globals are looked up when a state needs them
            self._globals_memo: dict[str, wasmtime.Global] | None = None
        except BaseException:
            self.close()
            raise
        self._memory = sink.memory = mem
        self.start_s = time.perf_counter() - t0
        self.invocations = 0

    def __enter__(self) -> CoreSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the store (and the instance, its memory and tables) now."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def invoke(self, blob: bytes | bytearray | None, path: str | None = None) -> SandboxResult:
        """Run once on ``blob``, or on the contents of the file ``path`` (read straight into
        the module's memory: the worker processes' hand-off)."""
        store, limits, mem, sink = self._store, self.limits, self._memory, self._sink
        if store is None:
            raise ValueError("invoke() on a closed core session")
        sink.result.clear()
        sink.whole.clear()
        sink.size, sink.error = 0, None
        store.set_epoch_deadline(engine.ticks_for(limits.time_budget_ms))
        stage = "transfer"
        t1 = time.perf_counter()
        size = len(blob) if blob is not None else _file_size(path)
        try:
            ptr = self._alloc(store, size)
            if ptr == 0:  # fades_alloc says it cannot: its memory is capped
                raise MemoryLimitExceeded(limits.memory_mib, stage="transfer", bytes=size)
            if not isinstance(ptr, int) or ptr < 0 or ptr + size > mem.data_len(store):
                raise FunctionCrashed(
                    f"function {self.artifact.name!r}: fades_alloc({size}) returned {ptr!r}, "
                    f"outside its memory of {mem.data_len(store)} bytes (fades-core/1)"
                )
            if blob is not None:
                mem.write(store, blob, ptr)
            else:
                _read_into(path, mem, store, ptr, size)
            t2 = time.perf_counter()
            stage = "compute"
            status = self._run(store, ptr, size)
            t3 = time.perf_counter()
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise _translate(exc, limits, store, mem, stage, sink) from None
        if status != 0:
            raise FunctionCrashed(
                f"function {self.artifact.name!r} returned error status {status}",
                logs=self.logs.text() or None,
            )
        value = sink.whole[0] if sink.whole else dict(sink.result)
        check_value(value, max_depth=self.host.max_result_depth)
        out = json.dumps(value, separators=(",", ":"), allow_nan=False)
        check_size(out, self.host.max_result_bytes)
        t4 = time.perf_counter()
        start = self.start_s if self.invocations == 0 else 0.0
        self.invocations += 1
        return SandboxResult(
            value=value,
            timing={"start": start, "transfer": t2 - t1, "compute": t3 - t2, "result": t4 - t3},
            bytes_in=size,
            bytes_out=len(out),
            compiled_cached=self.cached,
            logs=self.logs.text(),
        )

    @property
    def _globals(self) -> dict[str, wasmtime.Global]:
        """The instance's exported mutable globals (only states need them: looked up then)."""
        if self._globals_memo is None:
            assert self._store is not None
            self._globals_memo = core_state.mutable_globals(self._store, self._exports)
        return self._globals_memo

    def snapshot(self, limit: int | None = None) -> bytes:
        """The module's state at an invocation boundary: the memory chunks that changed since
        instantiation (compressed) and its exported mutable globals (see core_state)."""
        store = self._store
        if store is None:
            raise ValueError("snapshot() on a closed core session")
        base = _FRESH.get(self.artifact.digest)
        if base is None:
            with CoreSession(self.artifact, self.limits, self.host) as fresh:
                assert fresh._store is not None
                base = bytes(core_state._view(fresh._store, fresh._memory))
            if len(_FRESH) >= _FRESH_KEEP:
                _FRESH.pop(next(iter(_FRESH)))
            _FRESH[self.artifact.digest] = base
        bound = max_state_bytes() if limit is None else limit
        return core_state.capture(store, self._memory, self._globals, base, bound)

    def restore(self, state: bytes) -> None:
        """Apply a snapshot to this fresh instance (before its first invocation)."""
        if self._store is None:
            raise ValueError("restore() on a closed core session")
        if self.invocations:
            raise ValueError("restore() needs a fresh session (this one already ran)")
        core_state.restore(
            self._store, self._memory, self._globals, state, self.limits.memory_bytes
        )


def _file_size(path: str | None) -> int:
    if path is None:
        raise ValueError("invoke() needs a blob or a path")
    return os.stat(path).st_size


def _read_into(
    path: str | None, mem: wasmtime.Memory, store: wasmtime.Store, ptr: int, size: int
) -> None:
    """Read the file straight into linear memory: one copy from the page cache."""
    assert path is not None
    if size == 0:
        return
    base = ctypes.addressof(mem.data_ptr(store).contents)
    view = memoryview((ctypes.c_ubyte * size).from_address(base + ptr)).cast("B")
    with open(path, "rb", buffering=0) as f:
        pos = 0
        while pos < size:
            n = f.readinto(view[pos:])
            if not n:
                raise FunctionCrashed(f"input ended after {pos} of {size} bytes")
            pos += n


def _translate(
    exc: wasmtime.WasmtimeError | wasmtime.Trap,
    limits: Limits,
    store: wasmtime.Store,
    memory: wasmtime.Memory | None,
    stage: str,
    sink: _Sink,
) -> SandboxError:
    if sink.error is not None:
        return sink.error
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
