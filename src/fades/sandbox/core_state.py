"""Snapshot and restore of a core WebAssembly module's state (memory and mutable globals).

A core module's exported linear memory and globals are reachable from the host (unlike a
component's), so its state is captured without its cooperation, at an invocation boundary:

- memory: only the 4 KiB chunks that differ from a freshly instantiated copy of the module
  (instantiation is deterministic: a core module has no clock, randomness or input at start),
  zlib-compressed; chunks past the fresh size are compared with zeros;
- the exported mutable globals (i32, i64, f32, f64), by name.

Record: ``b"FCS1"``, u32 memory size in bytes, u32 chunk count, u32 globals-JSON length, the
chunk indexes (u32 each), the globals JSON, then the compressed chunks. Restoring grows the
fresh instance's memory to the recorded size, writes the chunks and sets the globals; a record
that does not fit the instance (too large for its memory cap, unknown globals, wrong types) is
refused with CheckpointRejected.
"""

from __future__ import annotations

import ctypes
import json
import struct
import zlib
from typing import Any

import wasmtime

from fades.errors import CheckpointRejected, StateError, StateNotCapturable

CHUNK = 4096
_HEAD = struct.Struct("<4sIII")
MAGIC = b"FCS1"
_NUMERIC = ("i32", "i64", "f32", "f64")


def _view(store: wasmtime.Store, memory: wasmtime.Memory) -> memoryview:
    size = memory.data_len(store)
    if size == 0:
        return memoryview(b"")
    base = ctypes.addressof(memory.data_ptr(store).contents)
    return memoryview((ctypes.c_ubyte * size).from_address(base)).cast("B")


def mutable_globals(store: wasmtime.Store, exports: Any) -> dict[str, wasmtime.Global]:
    """The instance's exported mutable globals, by name."""
    out: dict[str, wasmtime.Global] = {}
    for name, ext in exports.items():
        if isinstance(ext, wasmtime.Global) and ext.type(store).mutable:
            out[name] = ext
    return out


def capture(
    store: wasmtime.Store,
    memory: wasmtime.Memory,
    globals_: dict[str, wasmtime.Global],
    fresh: bytes | memoryview,
    limit: int,
) -> bytes:
    """The record of what changed in ``memory`` since ``fresh`` (a fresh instance's memory),
    plus the mutable globals; at most ``limit`` bytes.

    Raises:
        StateNotCapturable: a global of a type that is not a number (named).
        StateError: the record is over ``limit``.
    """
    values: dict[str, Any] = {}
    for name, g in globals_.items():
        kind = str(g.type(store).content)
        if kind not in _NUMERIC:
            raise StateNotCapturable(f"global {name!r} is a {kind}, which cannot be checkpointed")
        v = g.value(store)
        values[name] = [kind, float(v).hex() if kind in ("f32", "f64") else int(v)]
    mem = _view(store, memory)
    size = len(mem)
    base = memoryview(fresh)
    zero = bytes(CHUNK)
    chunks: list[int] = []
    comp = zlib.compressobj(6)
    parts: list[bytes] = []
    for i, off in enumerate(range(0, size, CHUNK)):
        cur = mem[off : off + CHUNK]
        old = base[off : off + CHUNK] if off < len(base) else zero[: len(cur)]
        if cur != old:
            chunks.append(i)
            parts.append(comp.compress(cur))
    parts.append(comp.flush())
    gjson = json.dumps(values, separators=(",", ":")).encode()
    record = b"".join(
        [
            _HEAD.pack(MAGIC, size, len(chunks), len(gjson)),
            struct.pack(f"<{len(chunks)}I", *chunks),
            gjson,
            *parts,
        ]
    )
    if len(record) > limit:
        raise StateError(
            f"the module's state is {len(record)} bytes compressed, over the limit of {limit} "
            f"bytes (FADES_STATE_MAX_BYTES)"
        )
    return record


def restore(
    store: wasmtime.Store,
    memory: wasmtime.Memory,
    globals_: dict[str, wasmtime.Global],
    record: bytes,
    cap_bytes: int,
) -> None:
    """Apply ``record`` to a fresh instance.

    Raises:
        CheckpointRejected: the record does not fit this instance (named reason).
    """

    def bad(why: str) -> CheckpointRejected:
        return CheckpointRejected(f"the module state could not be restored: {why}")

    if len(record) < _HEAD.size:
        raise bad("truncated")
    magic, size, count, glen = _HEAD.unpack_from(record)
    if magic != MAGIC:
        raise bad("not a core module state record")
    if size > cap_bytes:
        raise bad(f"it needs {size} bytes of memory, over the task's cap of {cap_bytes}")
    pos = _HEAD.size
    if pos + 4 * count + glen > len(record):
        raise bad("truncated")
    chunks = struct.unpack_from(f"<{count}I", record, pos)
    pos += 4 * count
    try:
        values = json.loads(record[pos : pos + glen])
        data = zlib.decompress(record[pos + glen :], bufsize=CHUNK)
    except (ValueError, zlib.error) as exc:
        raise bad(f"malformed ({type(exc).__name__})") from None
    page = 65536
    have = memory.data_len(store)
    if size > have:
        try:
            memory.grow(store, (size - have + page - 1) // page)
        except wasmtime.WasmtimeError:
            raise bad(f"the memory cannot grow to {size} bytes") from None
    mem = _view(store, memory)
    off = 0
    for i in chunks:
        start = i * CHUNK
        n = min(CHUNK, size - start)
        if start >= size or off + n > len(data):
            raise bad("a memory chunk is out of range")
        mem[start : start + n] = data[off : off + n]
        off += n
    if not isinstance(values, dict) or set(values) != set(globals_):
        raise bad(f"its globals {sorted(values)[:8]} are not the module's {sorted(globals_)[:8]}")
    for name, (kind, v) in values.items():
        g = globals_[name]
        if str(g.type(store).content) != kind:
            raise bad(f"global {name!r} is a {g.type(store).content}, the record holds a {kind}")
        make = {"i32": wasmtime.Val.i32, "i64": wasmtime.Val.i64}.get(kind)
        fmake = {"f32": wasmtime.Val.f32, "f64": wasmtime.Val.f64}.get(kind)
        try:
            g.set_value(store, make(int(v)) if make else fmake(float.fromhex(v)))  # type: ignore[misc]
        except (ValueError, TypeError, wasmtime.WasmtimeError) as exc:
            raise bad(f"global {name!r}: {exc}") from None
