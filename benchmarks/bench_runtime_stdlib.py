"""What the Python runtime costs: .wasm size, compile time, fresh-instance start, memory.

Measures the runtime built from the ``fades`` on PYTHONPATH. Before/after a guest change::

    git archive REV src | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before/src python benchmarks/bench_runtime_stdlib.py
    PYTHONPATH=src python benchmarks/bench_runtime_stdlib.py
"""

from __future__ import annotations

import statistics
import time

import wasmtime
from wasmtime import component

from fades.broker.base import Dataset
from fades.functions.artifact import create
from fades.functions.build import build_runtime, runtime_wasm
from fades.functions.keys import SigningKey
from fades.sandbox import Limits, PythonSandbox, engine
from fades.sandbox.wire import encode


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def main() -> None:
    wasm = runtime_wasm()
    t = time.perf_counter()
    comp = component.Component(engine.engine(), wasm)
    compile_s = time.perf_counter() - t
    linker = component.Linker(engine.engine())
    linker.add_wasip2()
    starts = []
    for i in range(105):
        t = time.perf_counter()
        store = wasmtime.Store(engine.engine())
        store.set_epoch_deadline(engine.ticks_for(60_000))
        store.set_wasi(wasmtime.WasiConfig())
        linker.instantiate(store, comp)
        if i >= 5:
            starts.append(time.perf_counter() - t)
        store.close()
    key = SigningKey.generate("bench")
    sandbox = PythonSandbox(build_runtime(key=key))
    sandbox.warm()
    fn = create("python", "f", b"def main(data, params):\n    return 1\n", key=key)
    blob = encode({"t": Dataset.from_records([1.0], [1.0], ["t"], ["r"], ["d"])}, {})
    with sandbox.open(fn, Limits(64, 5000)) as s:
        s.invoke(blob)
    r0 = rss_mib()
    live = [sandbox.open(fn, Limits(64, 5000)) for _ in range(20)]
    for s in live:
        s.invoke(blob)
    per = (rss_mib() - r0) / len(live)
    for s in live:
        s.close()
    print(
        f"runtime {len(wasm) / 2**20:.2f} MiB, compile {compile_s:.1f} s, "
        f"fresh instance start p50 {statistics.median(starts) * 1000:.2f} ms, "
        f"RSS per live instance after one call {per:.2f} MiB"
    )


if __name__ == "__main__":
    main()
