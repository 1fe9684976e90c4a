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

import base64
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import component

from fades.errors import (
    BadFunctionOutput,
    CheckpointRejected,
    MemoryLimitExceeded,
    ResultTooLarge,
    SandboxError,
    StateError,
    StateNotCapturable,
)
from fades.functions.artifact import Artifact
from fades.sandbox import engine
from fades.sandbox.base import HostLimits, Limits, LogBuffer, SandboxResult, write_input
from fades.sandbox.output import parse_json, seconds, size_of, typed_field
from fades.sandbox.pyerrors import translate_guest_error, translate_trap
from fades.sandbox.runcall import RunCall, input_written, mark_clean, needs_emptying
from fades.state.seal import max_state_bytes

#: The runtime cannot run below this much linear memory: its initial heap snapshot takes
#: about 12.4 MiB and it starts at 14 MiB; 16 MiB (the seeds' smallest unikernel) leaves
#: room for some 130 k readings.
MIN_MEMORY_MIB = 16

#: Private input directories (with their last input) kept for reuse by in-process sessions.
KEPT_INPUT_DIRS = 4

#: Inputs up to this size travel inside the call (base64 in its ``entry`` argument) rather
#: than as ``/input/data.fds``: the guest's WASI open/stat/read/close of a file cost more
#: (about 0.5 ms) than encoding and decoding a small blob.
INLINE_MAX_BYTES = 64 << 10

#: Time allowed for a pooled instance's warm-up call (host code only; normally ~2 ms).
WARM_BUDGET_MS = 10_000


def _scratch_dir() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class PythonSandbox:
    """Runs ``python`` artifacts on a verified runtime artifact."""

    def __init__(self, runtime: Artifact, host: HostLimits | None = None) -> None:
        self.runtime = runtime
        self.host = host or HostLimits(mode="inprocess")
        self._linker: component.Linker | None = None
        # private input directories of finished instances, kept for the next ones: the
        # input file in each is overwritten in place, reusing its RAM-backed pages
        self._dirs: list[tempfile.TemporaryDirectory[str]] = []
        self._dirs_lock = threading.Lock()
        #: the run export's parameter and result types, looked up on the first instance
        self.run_types: tuple[Any, Any] | None = None

    def _take_dir(self) -> tempfile.TemporaryDirectory[str]:
        with self._dirs_lock:
            if self._dirs:
                return self._dirs.pop()
        return tempfile.TemporaryDirectory(prefix="fades-in-", dir=_scratch_dir())

    def _give_dir(self, d: tempfile.TemporaryDirectory[str]) -> None:
        with self._dirs_lock:
            if len(self._dirs) < KEPT_INPUT_DIRS:
                self._dirs.append(d)
                return
        d.cleanup()

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

    def open(
        self,
        artifact: Artifact,
        limits: Limits,
        input_dir: str | None = None,
        instance: RuntimeInstance | None = None,
    ) -> PythonSession:
        """A live instance for ``artifact``: one invocation (ephemeral) or many (persistent).

        ``input_dir``: a directory the caller writes ``data.fds`` into before each
        ``invoke(None)`` (the worker processes' hand-off); by default the session makes one.
        """
        if limits.memory_mib < MIN_MEMORY_MIB:
            raise MemoryLimitExceeded(
                limits.memory_mib,
                detail=f"the Python runtime needs at least {MIN_MEMORY_MIB} MiB to start",
            )
        return PythonSession(self, artifact, limits, input_dir, instance)

    def run(self, artifact: Artifact, blob: bytes | bytearray, limits: Limits) -> SandboxResult:
        """Run once in a fresh instance."""
        with self.open(artifact, limits) as session:
            return session.invoke(blob)


class RuntimeInstance:
    """A runtime instance not yet given any function (what the pool keeps ready).

    Its store is capped at :data:`MIN_MEMORY_MIB` (below any task's cap) until a session
    takes it and raises the cap to the task's own ``memory_mib``.
    """

    def __init__(
        self, sandbox: PythonSandbox, input_dir: str | None, memory_bytes: int, warm: bytes = b""
    ) -> None:
        t0 = time.perf_counter()
        comp, self.cached = sandbox._component()
        assert sandbox._linker is not None
        self._sandbox = sandbox
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        if input_dir is None:
            self.tmp = sandbox._take_dir()
            input_dir = self.tmp.name
        self.input_dir = input_dir
        self.logs = LogBuffer(sandbox.host.max_log_bytes)
        store = wasmtime.Store(engine.engine())
        store.set_limits(memory_size=memory_bytes)
        #: the store's memory cap now (set_limits costs ~16 us: skipped when unchanged)
        self.memory_bytes = memory_bytes
        store.set_epoch_deadline(engine.ticks_for(WARM_BUDGET_MS))
        wasi = wasmtime.WasiConfig()
        wasi.preopen_dir(input_dir, "/input", False)
        wasi.stdout_custom = self.logs.write
        wasi.stderr_custom = self.logs.write
        store.set_wasi(wasi)
        try:
            instance = sandbox._linker.instantiate(store, comp)
            func = instance.get_func(store, "run")
            assert func is not None
            run = RunCall(func, store, sandbox.run_types)
            sandbox.run_types = run.types
            if warm:
                reply = run(store, base64.b64encode(warm).decode(), "\0warm\0", "fades_warm.py")
                if getattr(reply, "tag", None) != "ok":
                    raise SandboxError(f"the runtime's warm-up failed: {reply.payload!r:.300}")
                self.logs.clear()
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            store.close()
            self.close()
            raise translate_trap(exc, Limits(memory_bytes >> 20, WARM_BUDGET_MS)) from None
        self.store: wasmtime.Store | None = store
        self.run = run
        #: the digest of the function whose module this instance has loaded (see bind())
        self.bound: str | None = None
        self.prepare_s = time.perf_counter() - t0

    def bind(self, artifact: Artifact, limits: Limits) -> None:
        """Load ``artifact``'s module now, under ``limits``, so that its task's call starts
        from a loaded function: only a task of the same function may take it afterwards.
        No input is read: the module's own top-level code runs, nothing else.

        Raises:
            SandboxError: the module cannot be loaded (the instance is then closed).
        """
        store = self.store
        if store is None or self.bound is not None:
            raise ValueError("only an open, unbound runtime instance can be bound")
        t0 = time.perf_counter()
        store.set_limits(memory_size=limits.memory_bytes)
        self.memory_bytes = limits.memory_bytes
        store.set_epoch_deadline(engine.ticks_for(limits.time_budget_ms))
        name = source_filename(artifact.name)
        try:
            reply = self.run(store, artifact.payload.decode(), f"\0load\0{artifact.entry}", name)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            self.close()
            raise translate_trap(exc, limits) from None
        if getattr(reply, "tag", None) != "ok":
            self.close()
            raise SandboxError(f"the function's module did not load: {reply.payload!r:.300}")
        self.bound = artifact.digest
        self.prepare_s += time.perf_counter() - t0

    def close(self) -> None:
        store, self.store = getattr(self, "store", None), None
        if store is not None:
            store.close()
        if self.tmp is not None:
            self._sandbox._give_dir(self.tmp)
            self.tmp = None


class PythonSession:
    """One runtime instance bound to one function. Not thread-safe; use from one thread.

    ``instance``: a prepared, never-used instance (from :mod:`fades.sandbox.pool`) to bind
    instead of instantiating one now; it must have been made for the same ``input_dir``.
    """

    def __init__(
        self,
        sandbox: PythonSandbox,
        artifact: Artifact,
        limits: Limits,
        input_dir: str | None = None,
        instance: RuntimeInstance | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.pooled = instance is not None
        if instance is None:
            instance = RuntimeInstance(sandbox, input_dir, limits.memory_bytes)
        store = instance.store
        if store is None:
            raise ValueError("a closed runtime instance cannot be bound")
        if instance.bound not in (None, artifact.digest):
            raise ValueError("a runtime instance bound to one function cannot run another")
        # the task's own memory cap, whatever the instance was prepared with (its time
        # budget is set before each call: invoke(), _control())
        if instance.memory_bytes != limits.memory_bytes:
            store.set_limits(memory_size=limits.memory_bytes)
            instance.memory_bytes = limits.memory_bytes
        self._inst: RuntimeInstance | None = instance
        #: who destroys the instance on close() (the pool sets it); default: close() itself
        self.release: Callable[[RuntimeInstance], None] | None = None
        self.cached = instance.cached
        self.artifact, self.limits, self.host = artifact, limits, sandbox.host
        self._source = artifact.payload.decode()
        self._filename = source_filename(artifact.name)
        self._dir = instance.input_dir
        self._input = os.path.join(instance.input_dir, "data.fds")
        self.logs = instance.logs
        self._store: wasmtime.Store | None = store
        self._run = instance.run
        self.start_s = time.perf_counter() - t0
        self.invocations = 0

    def __enter__(self) -> PythonSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Done with the instance: it is destroyed (by the pool, off the request path, when it
        came from one); it is never used again."""
        self._store = None
        inst, self._inst = getattr(self, "_inst", None), None
        if inst is None:
            return
        if self.release is not None:
            self.release(inst)
        else:
            inst.close()

    def invoke(self, blob: bytes | bytearray | None) -> SandboxResult:
        """Run the function on ``blob`` (None: the caller already wrote ``data.fds`` into
        ``input_dir``); the time budget applies to each invocation."""
        t0 = time.perf_counter()
        entry = self.artifact.entry
        if blob is not None and len(blob) <= INLINE_MAX_BYTES:
            entry = f"\0inline\0{entry}\0{base64.b64encode(blob).decode()}"
            if needs_emptying(self._dir):  # an earlier task's input must not stay readable
                _empty(self._input)
                mark_clean(self._dir)
        else:
            input_written(self._dir)  # written now, or by the caller (blob None)
            if blob is not None:
                write_input(self._input, blob)
        t_write = time.perf_counter() - t0
        store, limits = self._store, self.limits
        if store is None:
            raise ValueError("invoke() on a closed Python session")
        store.set_epoch_deadline(engine.ticks_for(limits.time_budget_ms))
        t1 = time.perf_counter()
        try:
            reply = self._run(store, self._source, entry, self._filename)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            err = translate_trap(exc, limits)
            if self.logs.text():
                err.context.setdefault("logs", self.logs.text())
            raise err from None
        t2 = time.perf_counter()
        host = self.host
        tag, payload = getattr(reply, "tag", None), getattr(reply, "payload", None)
        if tag not in ("ok", "err") or not isinstance(payload, str):
            raise BadFunctionOutput("the runtime's reply is not a result<string, string>")
        if tag != "ok":
            raise translate_guest_error(payload, limits, self.logs.text(), host)
        # the reply holds the result plus a small timing object
        size = size_of(payload)
        if size > host.max_result_bytes + 4096:
            raise ResultTooLarge(host.max_result_bytes, size, what="result")
        out = parse_json(
            payload, limit=host.max_result_bytes + 4096, max_depth=host.max_result_depth + 1,
            what="reply",
        )  # fmt: skip
        if not isinstance(out, dict) or "result" not in out:
            raise BadFunctionOutput("the function's reply has no 'result'")
        g = typed_field(out, "timing", dict, "reply")
        read, load = seconds(g, "read"), seconds(g, "load")
        compute, encode = seconds(g, "compute"), seconds(g, "encode")
        if size > host.max_result_bytes:  # the bound above had room for timing
            raise ResultTooLarge(host.max_result_bytes, size, what="result")
        t3 = time.perf_counter()
        start = (self.start_s if self.invocations == 0 else 0.0) + load
        self.invocations += 1
        guest = read + load + compute + encode
        return SandboxResult(
            value=out["result"],
            timing={
                "start": start,
                "transfer": t_write + read,
                "compute": compute,
                # what the guest did not account for is the call/return path plus encoding
                "result": encode + (t3 - t2) + max(0.0, (t2 - t1) - guest),
            },
            bytes_in=len(blob) if blob is not None else os.stat(self._input).st_size,
            bytes_out=len(reply.payload),
            compiled_cached=self.cached,
            logs=self.logs.text(),
        )

    # --- state (stateful persistent functions; see fades.guest.fades_capture) ---------------
    def _control(self, control: str) -> str:
        store = self._store
        if store is None:
            raise ValueError("snapshot()/restore() on a closed Python session")
        store.set_epoch_deadline(engine.ticks_for(self.limits.time_budget_ms))
        try:
            reply = self._run(store, self._source, control, self._filename)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise translate_trap(exc, self.limits) from None
        tag, payload = getattr(reply, "tag", None), getattr(reply, "payload", None)
        if tag not in ("ok", "err") or not isinstance(payload, str):
            raise BadFunctionOutput("the runtime's reply is not a result<string, string>")
        if tag != "ok":
            err = translate_guest_error(payload, self.limits, self.logs.text(), self.host)
            kind = getattr(err, "guest_kind", "")
            if kind == "StateNotCapturable":
                raise StateNotCapturable(str(err.context.get("guest_message", err)))
            if kind == "StateRestoreError":
                raise CheckpointRejected(
                    f"the state could not be restored: {err.context.get('guest_message', err)}"
                )
            raise err
        return payload

    def snapshot(self, limit: int | None = None) -> bytes:
        """The function's module state, captured inside the sandbox at an invocation boundary
        (at most ``limit`` bytes; default ``FADES_STATE_MAX_BYTES``).

        Raises:
            StateNotCapturable: a global holds something that cannot be captured (named).
        """
        bound = max_state_bytes() if limit is None else limit
        text = self._control(f"\0snapshot\0{self.artifact.entry}\0{bound}")
        state = text.encode()
        if len(state) > bound:  # the guest was told the limit; the host checks anyway
            raise StateError(
                f"the function's state is {len(state)} bytes, over the limit of {bound} bytes "
                f"(FADES_STATE_MAX_BYTES)"
            )
        return state

    def restore(self, state: bytes) -> None:
        """Put a snapshot's state back into this (fresh) instance, then reseed its randomness.

        Raises:
            CheckpointRejected: the state cannot be decoded.
        """
        if self.invocations:
            raise ValueError("restore() needs a fresh session (this one already ran)")
        input_written(self._dir)
        write_input(self._input, state)
        self._control(f"\0restore\0{self.artifact.entry}")


def _empty(path: str) -> None:
    """Cut the input file at ``path`` (a kept directory's earlier input) to nothing."""
    with contextlib.suppress(FileNotFoundError):
        os.truncate(path, 0)


def source_filename(name: str) -> str:
    """The file name a function's tracebacks name: its artifact name, ending in ``.py``."""
    base = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:100] or "function"
    return base if base.endswith(".py") else base + ".py"
