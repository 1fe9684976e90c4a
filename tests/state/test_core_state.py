"""Core modules: memory (changed chunks, compressed) and mutable globals survive a snapshot
and restore into a fresh instance, in-process and in a worker process; a record that does
not fit is refused."""

from __future__ import annotations

from typing import Any

import pytest
import wasmtime

from fades.broker.base import Dataset
from fades.errors import CheckpointRejected
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.sandbox import HostLimits, Limits
from fades.sandbox.core import CoreSession
from fades.sandbox.procs import ProcSession
from fades.sandbox.wire import encode

# count lives in memory at 1024 (i64), calls in an exported mutable global; the first call
# grows memory by a page and keeps a running sum in the new page
COUNTER = """
(module
  (import "fades" "result_f64" (func $res (param i32 i32 f64)))
  (memory (export "memory") 1)
  (global $calls (export "calls") (mut i32) (i32.const 0))
  (global $ratio (export "ratio") (mut f64) (f64.const 0.5))
  (data (i32.const 16) "count")
  (data (i32.const 32) "calls")
  (data (i32.const 48) "extra")
  (func (export "fades_alloc") (param $n i32) (result i32)
    (if (i32.lt_u (i32.mul (memory.size) (i32.const 65536))
                  (i32.add (i32.const 8192) (local.get $n)))
      (then (drop (memory.grow (i32.const 1)))))
    (i32.const 8192))
  (func (export "fades_run") (param $p i32) (param $n i32) (result i32)
    (if (i32.eq (memory.size) (i32.const 1)) (then (drop (memory.grow (i32.const 1)))))
    (i64.store (i32.const 1024) (i64.add (i64.load (i32.const 1024)) (i64.const 1)))
    (i64.store (i32.const 70000) (i64.add (i64.load (i32.const 70000)) (i64.const 10)))
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (global.set $ratio (f64.mul (global.get $ratio) (f64.const 3)))
    (call $res (i32.const 16) (i32.const 5) (f64.convert_i64_u (i64.load (i32.const 1024))))
    (call $res (i32.const 32) (i32.const 5) (f64.convert_i32_u (global.get $calls)))
    (call $res (i32.const 48) (i32.const 5) (f64.convert_i64_u (i64.load (i32.const 70000))))
    (i32.const 0))
)
"""
LIMITS = Limits(4, 2000)


@pytest.fixture(scope="module")
def blob() -> bytearray:
    return encode({"t": Dataset.from_records([1.0], [2.0], ["temperature"], ["r"], ["d"])})


@pytest.fixture
def counter(signing_key: SigningKey) -> Artifact:
    return create("core", "counter", bytes(wasmtime.wat2wasm(COUNTER)), key=signing_key)


def test_core_memory_and_globals_round_trip(counter: Artifact, blob: bytearray) -> None:
    with CoreSession(counter, LIMITS) as s:
        for _ in range(3):
            s.invoke(blob)
        state = s.snapshot()
        ratio = s._globals["ratio"].value(s._store)  # type: ignore[arg-type]
    assert len(state) < 1024, len(state)  # a few changed chunks, compressed
    with CoreSession(counter, LIMITS) as s:
        s.restore(state)
        assert s._globals["ratio"].value(s._store) == ratio  # type: ignore[arg-type]
        out: Any = s.invoke(blob).value
    assert out == {"count": 4.0, "calls": 4.0, "extra": 40.0}
    with CoreSession(counter, LIMITS) as s:  # a fresh instance starts from nothing
        assert s.invoke(blob).value == {"count": 1.0, "calls": 1.0, "extra": 10.0}


def test_bad_core_records_refused(counter: Artifact, blob: bytearray) -> None:
    with CoreSession(counter, LIMITS) as s:
        s.invoke(blob)
        state = bytearray(s.snapshot())
    big = bytearray(state)
    big[4:8] = (64 << 20).to_bytes(4, "little")  # claims 64 MiB of memory
    with CoreSession(counter, LIMITS) as s, pytest.raises(CheckpointRejected, match="cap"):
        s.restore(bytes(big))
    with CoreSession(counter, LIMITS) as s, pytest.raises(CheckpointRejected, match="malformed"):
        s.restore(bytes(state[:-3]) + b"xyz")
    with CoreSession(counter, LIMITS) as s:  # the good one still restores
        s.restore(bytes(state))
        assert s.invoke(blob).value["count"] == 2.0


def test_core_state_in_worker_processes(counter: Artifact, blob: bytearray) -> None:
    host = HostLimits()
    s = ProcSession(host, counter, None, LIMITS)
    try:
        s.invoke(blob)
        s.invoke(blob)
        state = s.snapshot()
    finally:
        s.close()
    s = ProcSession(host, counter, None, LIMITS, restore=state)
    try:
        assert s.invoke(blob).value == {"count": 3.0, "calls": 3.0, "extra": 30.0}
    finally:
        s.close()
