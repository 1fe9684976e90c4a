"""The process-wide wasmtime engine, its epoch ticker and the compiled-code cache.

One engine serves every sandbox in the process. Time budgets use epoch interruption: a
daemon thread advances the engine's epoch every :data:`TICK_S` seconds and each store gets a
deadline in ticks, which costs the running code far less than fuel metering.

The ticker runs only while a deadline may be pending: every deadline is armed through
:func:`ticks_for`, which makes the ticker run until the epoch has passed that deadline plus
:data:`IDLE_TICKS`; then it sleeps until the next one. An idle process (the node itself,
whose sandboxes run in worker processes, or a worker between bursts) then spends no CPU
and no GIL hand-offs on 200 wake-ups a second. Set a store's deadline only with
``store.set_epoch_deadline(ticks_for(budget_ms))``: a deadline set otherwise may never be
reached.

Compiling the Python runtime takes seconds, so compiled forms are cached on disk in
``FADES_CACHE/compiled``, keyed by the payload digest and the wasmtime version. The cache must
stay private to the node: deserialising runs native code without re-validating it.
"""

from __future__ import annotations

import os
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import wasmtime
from wasmtime import component

from fades import paths

TICK_S = 0.005
#: Ticks the ticker keeps running after the last armed deadline (1 s), before it sleeps.
IDLE_TICKS = 200
T = TypeVar("T", wasmtime.Module, component.Component)

_lock = threading.Lock()
_compile_lock = threading.Lock()
_engine: wasmtime.Engine | None = None
_memo: dict[tuple[str, str], object] = {}
#: The ticker's state: ticks so far (only the ticker advances the engine's epoch), the tick
#: count it runs to at least, and the flag that wakes it when a deadline is armed.
_epoch = 0
_until = 0
_armed = threading.Event()
_arm_lock = threading.Lock()


def _tick(engine: wasmtime.Engine) -> None:
    global _epoch
    while True:
        if _epoch >= _until:
            _armed.clear()
            if _epoch >= _until:  # not armed between the check and the clear
                _armed.wait()
        time.sleep(TICK_S)
        engine.increment_epoch()
        _epoch += 1


def ticks() -> int:
    """The ticks counted so far (tests: whether the ticker sleeps)."""
    return _epoch


def engine() -> wasmtime.Engine:
    """The shared engine (created on first use, with its ticker thread)."""
    global _engine
    with _lock:
        if _engine is None:
            cfg = wasmtime.Config()
            cfg.epoch_interruption = True
            _engine = wasmtime.Engine(cfg)
            threading.Thread(target=_tick, args=(_engine,), name="fades-epoch", daemon=True).start()
        return _engine


def ticks_for(budget_ms: int) -> int:
    """Epoch ticks for a time budget (rounded up, at least one), for a deadline set now:
    the ticker runs at least until the epoch has passed it (see the module's docstring)."""
    global _until
    n = max(1, -(-budget_ms // int(TICK_S * 1000)))
    with _arm_lock:
        end = _epoch + n + IDLE_TICKS
        if end > _until:
            _until = end
    if not _armed.is_set():
        _armed.set()
    return n


def _version() -> str:
    try:
        return metadata.version("wasmtime")
    except metadata.PackageNotFoundError:  # pragma: no cover - wasmtime always has metadata
        return "unknown"


def cache_path(kind: str, payload_sha256: str) -> Path:
    return paths.cache() / "compiled" / f"{kind}-{payload_sha256[:32]}-wt{_version()}.cwasm"


def load_compiled(cls: type[T], payload: bytes, payload_sha256: str) -> tuple[T, bool]:
    """Compile ``payload`` or reuse its cached compiled form.

    Returns:
        The module or component, and whether it came from a cache (memory or disk).
    """
    kind = "component" if cls is component.Component else "module"
    key = (kind, payload_sha256)
    eng = engine()
    cached = _memo.get(key)
    if cached is not None:
        return cached, True  # type: ignore[return-value]
    with _compile_lock:  # one compilation at a time: the runtime takes seconds to compile
        cached = _memo.get(key)
        if cached is not None:
            return cached, True  # type: ignore[return-value]
        return _load(cls, eng, kind, key, payload, payload_sha256)


def _load(
    cls: type[T],
    eng: wasmtime.Engine,
    kind: str,
    key: tuple[str, str],
    payload: bytes,
    payload_sha256: str,
) -> tuple[T, bool]:
    path = cache_path(kind, payload_sha256)
    obj: T
    hit = False
    if path.exists():
        try:
            obj = cls.deserialize_file(eng, str(path))
            hit = True
        except wasmtime.WasmtimeError:
            path.unlink(missing_ok=True)  # stale or from another build: recompile
    if not hit:
        obj = cls(eng, payload)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # workers race
        tmp.write_bytes(obj.serialize())
        tmp.replace(path)
    _memo[key] = obj
    return obj, hit


def forget_compiled() -> None:
    """Drop in-memory compiled objects (benchmarks use this to measure disk-cache starts)."""
    _memo.clear()
