"""Nothing leaks (issue 16, class 3): a bounded soak of mixed ordinary and hostile tasks
through the sandbox layer leaves no live wasmtime Store and RSS near its baseline.

Runs in-process, so that the stores can be counted here; the worker processes add recycling
(after ``worker_max_tasks`` or above ``worker_max_idle_rss_mib``) as a backstop.
"""

from __future__ import annotations

import gc
import textwrap
from pathlib import Path

import pytest
import wasmtime

from fades.broker.base import Dataset
from fades.errors import SandboxError
from fades.functions.artifact import Artifact, create
from fades.functions.build import build_core
from fades.functions.keys import SigningKey
from fades.sandbox import CoreSandbox, HostLimits, Limits, PythonSandbox
from fades.sandbox.wire import encode

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "functions"
TASKS = 2000
MAX_GROWTH_MIB = 40

TRAP = """(module (memory (export "memory") 1)
  (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "fades_run") (param i32 i32) (result i32) unreachable))"""
BOMB = """(module (memory (export "memory") 1)
  (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "fades_run") (param i32 i32) (result i32)
    (loop $l (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable)) (br $l))
    (i32.const 0)))"""
LOOP = """(module (memory (export "memory") 1)
  (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "fades_run") (param i32 i32) (result i32) (loop $l (br $l)) (i32.const 0)))"""
TABLE = """(module (memory (export "memory") 1) (table $t 1 funcref)
  (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "fades_run") (param i32 i32) (result i32)
    (drop (table.grow $t (ref.null func) (i32.const 50000000))) (i32.const 0)))"""

OK_PY = "def main(d, p):\n    return sum(d['t'].values)\n"
RAISE_PY = "def main(d, p):\n    raise ValueError('x' * 100000)\n"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / (1 << 20)


def _stores() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, wasmtime.Store))


@pytest.fixture(scope="module")
def blob() -> bytearray:
    n = 2000
    ds = Dataset.from_records(
        [float(i) for i in range(n)], [20.0] * n, ["temperature"] * n, ["r1"] * n, ["d"] * n
    )
    return encode({"t": ds})


def test_a_soak_of_mixed_tasks_leaves_no_store_and_flat_rss(
    runtime_artifact: Artifact, blob: bytearray, signing_key: SigningKey
) -> None:
    host = HostLimits(mode="inprocess")
    core, python = CoreSandbox(host), PythonSandbox(runtime_artifact, host)

    def wat(name: str, text: str) -> Artifact:
        return create("core", name, bytes(wasmtime.wat2wasm(text)), key=signing_key)

    def src(name: str, text: str) -> Artifact:
        return create("python", name, textwrap.dedent(text).lstrip().encode(), key=signing_key)

    mean = build_core(EXAMPLES / "mean_core.wat", key=signing_key)
    mix: list[tuple[object, Artifact, Limits, bool]] = [
        (core, mean, Limits(64, 2000), True),
        (core, mean, Limits(64, 2000), True),
        (core, mean, Limits(64, 2000), True),
        (core, wat("trap", TRAP), Limits(64, 2000), False),
        (core, wat("bomb", BOMB), Limits(8, 2000), False),
        (core, wat("table", TABLE), Limits(8, 2000), True),
        (python, src("ok", OK_PY), Limits(32, 5000), True),
        (python, src("raise", RAISE_PY), Limits(32, 5000), False),
    ]  # fmt: skip
    loop = (core, wat("loop", LOOP), Limits(8, 10), False)

    def one(i: int) -> None:
        sandbox, art, limits, ok = loop if i % 100 == 99 else mix[i % len(mix)]
        try:
            sandbox.run(art, blob, limits)  # type: ignore[attr-defined]
            assert ok, art.name
        except SandboxError:
            assert not ok, art.name

    for i in range(100):  # warm up: compiled forms, caches, allocator arenas
        one(i)
    base_rss, base_stores = _rss_mib(), _stores()
    for i in range(TASKS):
        one(i)
    rss, stores = _rss_mib(), _stores()
    assert stores == base_stores == 0
    assert rss - base_rss < MAX_GROWTH_MIB, (base_rss, rss)
