"""A worker is replaced when it is left with more resident memory than the node's idle bound
(``worker_max_idle_rss_mib``); the node reads the worker's current memory after a task only
when the peak the worker reported with its answer is above that bound."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import wasmtime

from fades.broker.base import Dataset
from fades.errors import FunctionCrashed
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.sandbox import HostLimits, Limits
from fades.sandbox.procs import Worker, WorkerPool
from fades.sandbox.wire import encode

ROWS = """
(module
  (import "fades" "result_f64" (func $r (param i32 i32 f64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "rows")
  (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "fades_run") (param i32 i32) (result i32)
    (call $r (i32.const 0) (i32.const 4) (f64.const 4))
    (i32.const 0))
)
"""


@pytest.fixture
def art(signing_key: SigningKey) -> Artifact:
    return create("core", "rows", bytes(wasmtime.wat2wasm(ROWS)), key=signing_key)


@pytest.fixture
def blob() -> bytearray:
    ds = Dataset.from_records([1.0, 2.0], [20.0, 21.0], ["t"] * 2, ["room1"] * 2, ["d"] * 2)
    return encode({"t": ds})


def _pool(idle_mib: int) -> Iterator[WorkerPool]:
    pool = WorkerPool(1, HostLimits(worker_max_idle_rss_mib=idle_mib))
    try:
        yield pool
    finally:
        pool.close()


def _wait_pids(pool: WorkerPool, old: int) -> int:
    deadline = time.monotonic() + 120
    while True:
        pids = pool.pids()
        if pids and pids[0] != old:
            return pids[0]
        assert time.monotonic() < deadline, "the worker was never replaced"
        time.sleep(0.02)


def test_a_worker_over_the_idle_bound_is_replaced(art: Artifact, blob: bytearray) -> None:
    for pool in _pool(1):  # every worker holds more than 1 MiB
        first = pool.pids()[0]
        assert pool.run(art, None, blob, Limits(4, 2000)).value == {"rows": 4.0}
        second = _wait_pids(pool, first)
        assert pool.run(art, None, blob, Limits(4, 2000)).value == {"rows": 4.0}
        _wait_pids(pool, second)


def test_under_the_bound_the_reported_peak_spares_the_memory_read(
    art: Artifact, blob: bytearray, monkeypatch: pytest.MonkeyPatch
) -> None:
    for pool in _pool(4096):
        assert pool.run(art, None, blob, Limits(4, 2000)).value == {"rows": 4.0}
        [w] = pool._idle
        assert w.peak_rss is not None and 0 < w.peak_rss < 4096 << 20

        def no_read(self: Worker) -> int:
            raise AssertionError("read the worker's memory although its peak was under the bound")

        monkeypatch.setattr(Worker, "anon_rss", no_read)
        assert not w.stale()
        w.peak_rss = None  # unknown (a task that failed): the current memory is read again
        with pytest.raises(AssertionError, match="read the worker's memory"):
            w.stale()


def test_a_failed_task_leaves_the_peak_unknown(art: Artifact, blob: bytearray) -> None:
    for pool in _pool(4096):
        assert pool.run(art, None, blob, Limits(4, 2000)).value == {"rows": 4.0}
        [w] = pool._idle
        w.proc.kill()  # the next task finds its worker dead
        with pytest.raises(FunctionCrashed):
            pool.run(art, None, blob, Limits(4, 2000))
        assert w.peak_rss is None


def test_the_kept_memory_file_is_closed_with_its_worker(art: Artifact, blob: bytearray) -> None:
    import os

    for pool in _pool(4096):
        assert pool.run(art, None, blob, Limits(4, 2000)).value == {"rows": 4.0}
        [w] = pool._idle
        assert w.anon_rss() > 0
        assert w.anon_rss() > 0  # read again in place
        fd = w._statm
        assert fd is not None
        path = f"/proc/{w.pid}/statm"
        assert os.readlink(f"/proc/self/fd/{fd}") == path
    assert w._statm is None and w.anon_rss() == 0
    # closed: the descriptor is gone, or (another thread reused its number) is another file
    try:
        now = os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        now = None
    assert now != path
