"""Benchmarks of one fades node: sandboxes, data transfer, orchestrator, memory caps, artifacts.

Run ``python benchmarks/bench_single_node.py [--quick]``. Writes
``benchmarks/results/single_node.json`` and ``benchmarks/results/single_node_*.png``.

Every figure is measured against a baseline taken in the same run (the machine is shared
and noisy), and reported as medians/percentiles over repetitions:

1. Cold start of a Python function (runtime cached in memory, and deserialised from the disk
   cache after ``engine.forget_compiled()``) and of a core module: instantiation alone (the
   session's ``start_s``) and the whole tiny invocation. Baseline: ``python -c pass``.
   Targets: Python p50 <= 5 ms, core p50 <= 0.1 ms.
2. Broker -> sandbox transfer throughput for 1 MB..100 MB FDS1 blobs, into a Python function
   (host write + guest read) and into a core module (memory write). Baseline: a native
   ``memmove`` of the same bytes. Target >= 500 MB/s.
3. Mean over 1 M readings: sandboxed Python (``sum(v)/len(v)`` over the zero-copy view) and
   the WAT core module against native CPython running the same function on the same blob.
   Target: sandboxed <= 4x native (compute-only and end-to-end).
4. Tasks per second through the orchestrator (SQLite broker, capacity 2, submit all then wait
   all) for a mean over 100 readings, Python and core. Baseline: the same work in a plain
   single-thread loop (fetch + encode + sandbox run). Target >= 300 tasks/s.
5. Largest number of readings processable against the memory cap, 16..512 MiB (the FADES
   paper's figure 4, for our sandbox), by binary search, for the core module and Python.
6. Artifact bytes of each example Python function against the runtime artifact. Target
   <= 64 KiB per Python function; the seeds' unikernel image was about 5 MB.

Plus a stacked-bar timing breakdown of one representative task per function kind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fades.broker.base import CATEGORICAL, Dataset
from fades.errors import SandboxError
from fades.functions.artifact import Artifact
from fades.functions.build import build_core, build_python, build_runtime
from fades.functions.keys import SigningKey, public_pem
from fades.guest import fades_sdk
from fades.node import Node
from fades.sandbox import engine
from fades.sandbox.base import Limits
from fades.sandbox.core import CoreSandbox
from fades.sandbox.python import MIN_MEMORY_MIB, PythonSandbox, PythonSession
from fades.sandbox.wire import encode

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
EXAMPLES = ROOT / "examples" / "functions"
MB = 1_000_000
MIB = 1 << 20
BYTES_PER_READING = 8 + 8 + 2 * len(CATEGORICAL)  # ts, value, three u16 codes
SEED_UNIKERNEL_BYTES = 5_000_000  # ECCO: a unikernel EF image was about 5 MB

MEAN_SRC = '''"""Mean of the first dataset's values (the benchmark's aggregation)."""


def main(data, params):
    v = next(iter(data.values())).values
    return {"mean": sum(v) / len(v), "count": len(v)}
'''
LEN_SRC = '''"""Reads its input and reports its size: transfer without compute."""


def main(data, params):
    return len(next(iter(data.values())))
'''
NOOP_SRC = '''"""Does nothing (cold-start probe)."""


def main(data, params):
    return 0
'''


# --- helpers ---------------------------------------------------------------------------------
def pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q))


def summary(xs: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """p50/p10/p90/min/max of ``xs`` times ``scale``."""
    return {
        "p50": pct(xs, 50) * scale,
        "p10": pct(xs, 10) * scale,
        "p90": pct(xs, 90) * scale,
        "min": min(xs) * scale,
        "max": max(xs) * scale,
        "n": len(xs),
    }


def verdict(value: float, target: float, *, higher_is_better: bool) -> dict[str, Any]:
    """Whether ``value`` meets ``target``; ``factor`` > 1 means by how much it misses."""
    met = value >= target if higher_is_better else value <= target
    factor = target / value if higher_is_better else value / target
    return {"target": target, "value": value, "met": met, "factor_vs_target": factor}


def dataset(n: int, seed: int = 1) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        ts=np.arange(n, dtype=np.float64) + 1.7e9,
        value=rng.normal(21.0, 2.0, n),
        codes={c: np.zeros(n, np.uint16) for c in CATEGORICAL},
        labels={c: ["x"] for c in CATEGORICAL},
        units={"x": "C"},
    )


def head(ds: Dataset, n: int) -> Dataset:
    """The first ``n`` readings of ``ds`` (numpy views: no copy until encoding)."""
    return Dataset(
        ts=ds.ts[:n],
        value=ds.value[:n],
        codes={c: ds.codes[c][:n] for c in CATEGORICAL},
        labels=ds.labels,
        units=ds.units,
    )


def readings_for_bytes(nbytes: int) -> int:
    return max(1, nbytes // BYTES_PER_READING)


def log(msg: str) -> None:
    print(msg, flush=True)


class Bench:
    """Artifacts and sandboxes shared by every section."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = SigningKey.generate("bench")
        t0 = time.perf_counter()
        self.runtime = build_runtime(key=self.key)
        self.runtime_build_s = time.perf_counter() - t0
        src = tmp / "src"
        src.mkdir()
        for name, text in (("bench_mean", MEAN_SRC), ("bench_len", LEN_SRC), ("noop", NOOP_SRC)):
            (src / f"{name}.py").write_text(text)
        self.py_mean = build_python(src / "bench_mean.py", key=self.key)
        self.py_len = build_python(src / "bench_len.py", key=self.key)
        self.py_noop = build_python(src / "noop.py", key=self.key)
        self.core_mean = build_core(EXAMPLES / "mean_core.wat", key=self.key)
        self.python = PythonSandbox(self.runtime)
        self.core = CoreSandbox()
        t0 = time.perf_counter()
        self.python.warm()
        self.runtime_load_s = time.perf_counter() - t0

    def sandbox(self, art: Artifact) -> PythonSandbox | CoreSandbox:
        return self.core if art.kind == "core" else self.python


# --- 1. cold start ---------------------------------------------------------------------------
def bench_cold_start(b: Bench, reps: int, disk_reps: int, proc_reps: int) -> dict[str, Any]:
    log("1. cold start")
    tiny = encode({"d": dataset(10)})

    def procs(cmd: list[str]) -> list[float]:
        out = []
        for _ in range(proc_reps):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            out.append(time.perf_counter() - t0)
        return out

    sub = procs([sys.executable, "-c", "pass"])
    python_on_path = shutil.which("python") or shutil.which("python3") or sys.executable
    path_python = procs([python_on_path, "-c", "pass"])

    def sessions(art: Artifact, n: int, forget: bool, limits: Limits) -> dict[str, Any]:
        starts, wholes, cached = [], [], []
        sb = b.sandbox(art)
        for _ in range(n):
            if forget:
                engine.forget_compiled()
            t0 = time.perf_counter()
            s = sb.open(art, limits)
            s.invoke(tiny)
            s.close()
            wholes.append(time.perf_counter() - t0)
            starts.append(s.start_s)
            cached.append(s.cached)
        return {
            "start_ms": summary(starts, 1e3),
            "invocation_ms": summary(wholes, 1e3),
            "compiled_cached": all(cached),
        }

    sessions(b.py_noop, 3, False, Limits(64))  # warm code paths
    sessions(b.core_mean, 3, False, Limits(16))
    py_mem = sessions(b.py_noop, reps, False, Limits(64))
    py_disk = sessions(b.py_noop, disk_reps, True, Limits(64))
    engine.forget_compiled()
    b.python.warm()  # back to the in-memory cache for what follows
    core = sessions(b.core_mean, reps * 4, False, Limits(16))
    base = statistics.median(sub) * 1e3

    def with_verdict(d: dict[str, Any], target: float) -> dict[str, Any]:
        d["start_target"] = verdict(d["start_ms"]["p50"], target, higher_is_better=False)
        d["invocation_target"] = verdict(d["invocation_ms"]["p50"], target, higher_is_better=False)
        d["speedup_vs_subprocess_start"] = base / d["start_ms"]["p50"]
        d["speedup_vs_subprocess_invocation"] = base / d["invocation_ms"]["p50"]
        return d

    out = {
        "baseline": {
            "subprocess_sys_executable_ms": summary(sub, 1e3),
            "python_on_path": python_on_path,
            "python_on_path_ms": summary(path_python, 1e3),
        },
        "python_memory_cache": with_verdict(py_mem, 5.0),
        "python_disk_cache": with_verdict(py_disk, 5.0),
        "core": with_verdict(core, 0.1),
        "runtime_artifact_load_first_s": b.runtime_load_s,
    }
    for k in ("python_memory_cache", "python_disk_cache", "core"):
        d = out[k]
        log(
            f"   {k}: start p50 {d['start_ms']['p50']:.3f} ms, invocation p50 "
            f"{d['invocation_ms']['p50']:.3f} ms (python -c pass {base:.1f} ms)"
        )
    return out


# --- 2. transfer -----------------------------------------------------------------------------
def bench_transfer(b: Bench, sizes_mb: list[int], reps: int) -> dict[str, Any]:
    log("2. broker -> sandbox transfer")
    big = dataset(readings_for_bytes(max(sizes_mb) * MB))
    rows = []
    for size in sizes_mb:
        blob = encode({"d": head(big, readings_for_bytes(size * MB))})
        nbytes = len(blob)
        cap = int(nbytes / MIB) + 64
        memmove, py, core = [], [], []
        for _ in range(reps):
            dst = bytearray(nbytes)  # fresh pages, as the sandboxes get
            t0 = time.perf_counter()
            dst[:] = blob
            memmove.append(time.perf_counter() - t0)
            del dst
            r = b.python.run(b.py_len, blob, Limits(cap, 60_000))
            py.append(r.timing["transfer"])
            r = b.core.run(b.core_mean, blob, Limits(cap, 60_000))
            core.append(r.timing["transfer"])
        row: dict[str, Any] = {"size_mb": nbytes / MB, "bytes": nbytes}
        for name, xs in (("native_memmove", memmove), ("python", py), ("core", core)):
            row[name] = {
                "mb_per_s_p50": nbytes / MB / statistics.median(xs),
                "mb_per_s_p10": nbytes / MB / pct(xs, 90),
                "seconds": summary(xs),
            }
        for name in ("python", "core"):
            mbs = row[name]["mb_per_s_p50"]
            row[name]["target"] = verdict(mbs, 500.0, higher_is_better=True)
            row[name]["fraction_of_memmove"] = mbs / row["native_memmove"]["mb_per_s_p50"]
        rows.append(row)
        log(
            f"   {nbytes / MB:7.1f} MB: python {row['python']['mb_per_s_p50']:7.0f} MB/s, "
            f"core {row['core']['mb_per_s_p50']:7.0f} MB/s, "
            f"memmove {row['native_memmove']['mb_per_s_p50']:7.0f} MB/s"
        )
    return {
        "rows": rows,
        "all_met": {k: all(r[k]["target"]["met"] for r in rows) for k in ("python", "core")},
        "min_mb_per_s": {k: min(r[k]["mb_per_s_p50"] for r in rows) for k in ("python", "core")},
    }


# --- 3. mean over 1 M readings ---------------------------------------------------------------
def native_function(source: str) -> Callable[[Any, Any], Any]:
    ns: dict[str, Any] = {"__name__": "fades_function"}
    exec(compile(source, "<function>", "exec"), ns)
    fn: Callable[[Any, Any], Any] = ns["main"]
    return fn


def bench_mean(b: Bench, n: int, reps: int) -> dict[str, Any]:
    log(f"3. mean over {n:,} readings")
    blob = encode({"d": dataset(n)})
    cap = int(len(blob) / MIB) + 64
    fn = native_function(MEAN_SRC)
    native_c, native_e2e, vals = [], [], []
    py_c, py_e2e, py_wall = [], [], []
    co_c, co_e2e, co_wall = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        data, params = fades_sdk.decode(blob)
        t1 = time.perf_counter()
        res = fn(data, params)
        t2 = time.perf_counter()
        json.dumps(res)
        t3 = time.perf_counter()
        native_c.append(t2 - t1)
        native_e2e.append(t3 - t0)
        vals.append(res["mean"])
        for art, comp, e2e, wall in (
            (b.py_mean, py_c, py_e2e, py_wall),
            (b.core_mean, co_c, co_e2e, co_wall),
        ):
            t0 = time.perf_counter()
            r = b.sandbox(art).run(art, blob, Limits(cap, 60_000))
            wall.append(time.perf_counter() - t0)
            comp.append(r.timing["compute"])
            e2e.append(sum(r.timing.values()))
            vals.append(r.value["mean"])
    spread = max(vals) - min(vals)
    nat_c, nat_e = statistics.median(native_c), statistics.median(native_e2e)
    out: dict[str, Any] = {
        "readings": n,
        "blob_bytes": len(blob),
        "results_agree": spread < 1e-9 * max(1.0, abs(vals[0])),
        "native_ms": {"compute": summary(native_c, 1e3), "end_to_end": summary(native_e2e, 1e3)},
    }
    for name, comp, e2e, wall in (
        ("python", py_c, py_e2e, py_wall),
        ("core", co_c, co_e2e, co_wall),
    ):
        rc = statistics.median(comp) / nat_c
        re = statistics.median(e2e) / nat_e
        out[name] = {
            "compute_ms": summary(comp, 1e3),
            "end_to_end_ms": summary(e2e, 1e3),
            "wall_ms": summary(wall, 1e3),
            "ratio_compute": rc,
            "ratio_end_to_end": re,
            "target_compute": verdict(rc, 4.0, higher_is_better=False),
            "target_end_to_end": verdict(re, 4.0, higher_is_better=False),
        }
        log(f"   {name}: compute {rc:.2f}x native, end-to-end {re:.2f}x native")
    return out


# --- 4. orchestrator throughput --------------------------------------------------------------
STAGES = ("queue", "retrieval", "transfer", "start", "compute", "result", "total")


def make_node(b: Bench, home: Path, readings: int) -> None:
    (home / "trusted").mkdir(parents=True)
    (home / "trusted" / f"{b.key.id}.pub").write_bytes(public_pem(b.key.public))
    from fades.broker import SQLiteConnector

    store = SQLiteConnector(home / "readings.db")
    ds = dataset(readings, seed=3)
    store.write_columns(ds.ts, ds.value, "temperature", "room1", "t1", "C")
    other = dataset(readings * 10, seed=4)  # data the tasks do not select
    store.write_columns(other.ts, other.value, "humidity", "room1", "h1", "%")
    store.close()


def task(artifact: str, memory_mib: int) -> dict[str, Any]:
    return {
        "credentials": {"tenant": "bench"},
        "data": [
            {"name": "temperature", "select": {"location": "room1", "sensor_type": "temperature"}}
        ],
        "function": {"artifact": artifact, "memory_mib": memory_mib, "time_budget_ms": 5000},
    }


def bench_throughput(b: Bench, tasks: int, readings: int, direct_reps: int) -> dict[str, Any]:
    log(f"4. orchestrator throughput ({tasks} tasks, {readings} readings each)")
    out: dict[str, Any] = {"tasks": tasks, "readings_per_task": readings, "capacity": 2}
    with tempfile.TemporaryDirectory(prefix="fades-bench-node-") as tmp:
        home = Path(tmp)
        make_node(b, home, readings)
        with Node(home, capacity=2) as node:
            for art in (b.runtime, b.py_mean, b.core_mean):
                node.functions.add(art.to_bytes())
            orc = node.orchestrator
            for kind, name, mem in (("python", "bench_mean", 64), ("core", "mean_core", 16)):
                for tid in [orc.submit(task(name, mem)) for _ in range(10)]:  # warm up
                    orc.wait(tid, timeout=60)
                # baseline: the same work, one task after another, no orchestrator
                from fades.task import parse_task

                tk = parse_task(task(name, mem))
                art = node.functions.get(name)
                direct: list[float] = []

                def loop(
                    n: int, out: list[float], art: Artifact = art, mem: int = mem, t: Any = tk
                ) -> None:
                    for _ in range(n):
                        t0 = time.perf_counter()
                        datasets, _ = node.broker.fetch(t.tenant, list(t.data))
                        node.orchestrator.sandboxes.run(art, encode(datasets), Limits(mem, 5000))
                        out.append(time.perf_counter() - t0)

                loop(direct_reps, direct)
                # the ceiling: the same loop in 2 plain threads (no task store, queue, waits)
                threads = [threading.Thread(target=loop, args=(direct_reps, [])) for _ in range(2)]
                t0 = time.perf_counter()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                par_rate = 2 * direct_reps / (time.perf_counter() - t0)
                t0 = time.perf_counter()
                ids = [orc.submit(task(name, mem)) for _ in range(tasks)]
                t_sub = time.perf_counter()
                recs = [orc.wait(tid, timeout=120) for tid in ids]
                wall = time.perf_counter() - t0
                ok = [r for r in recs if r.status == "done"]
                rate = tasks / wall
                per_stage = {
                    s: statistics.median(r.timing.get(s, 0.0) for r in ok) * 1e3 for s in STAGES
                }
                # a representative task: the one whose total is the median
                by_total = sorted(ok, key=lambda r: r.timing["total"])
                rep = by_total[len(by_total) // 2].timing
                direct_rate = 1.0 / statistics.median(direct)
                out[kind] = {
                    "tasks_per_s": rate,
                    "submit_per_s": tasks / (t_sub - t0),
                    "wall_s": wall,
                    "done": len(ok),
                    "failed": [r.error for r in recs if r.status != "done"][:3],
                    "median_stage_ms": per_stage,
                    "representative_timing_ms": {k: v * 1e3 for k, v in rep.items()},
                    "baseline_serial_direct_tasks_per_s": direct_rate,
                    "ratio_vs_serial_direct": rate / direct_rate,
                    "baseline_2_threads_direct_tasks_per_s": par_rate,
                    "ratio_vs_2_threads_direct": rate / par_rate,
                    "target": verdict(rate, 300.0, higher_is_better=True),
                }
                log(
                    f"   {kind}: {rate:.0f} tasks/s (direct loop: serial {direct_rate:.0f}/s, "
                    f"2 threads {par_rate:.0f}/s; "
                    f"submit {tasks / (t_sub - t0):.0f}/s); median stages "
                    + ", ".join(f"{s} {v:.2f}" for s, v in per_stage.items() if s != "queue")
                    + " ms"
                )
    return out


# --- 5. readings vs memory cap ---------------------------------------------------------------
def bench_memory(
    b: Bench, caps: list[int], rel_tol: float, pool: Dataset | None = None
) -> dict[str, Any]:
    log(f"5. largest dataset vs memory cap ({caps} MiB)")
    need = readings_for_bytes(max(caps) * MIB) + 1000
    pool = pool if pool is not None and len(pool) >= need else dataset(need, seed=5)
    rows: list[dict[str, Any]] = []

    def ok(art: Artifact, n: int, cap: int, bypass: bool = False) -> tuple[bool, str]:
        blob = encode({"d": head(pool, n)})
        try:
            if bypass:  # the Python runtime below MIN_MEMORY_MIB, skipping the floor check
                with PythonSession(b.python, art, Limits(cap, 120_000)) as s:
                    r = s.invoke(blob)
            else:
                r = b.sandbox(art).run(art, blob, Limits(cap, 120_000))
        except SandboxError as exc:
            return False, f"{exc.kind}: {exc}"
        finally:
            del blob
        return r.value["count"] == n, ""

    tiny = encode({"d": head(pool, 1)})

    def bypass_floor(cap: int) -> str:
        """Start the runtime under ``cap`` without the MIN_MEMORY_MIB check: what happens."""
        try:
            with PythonSession(b.python, b.py_mean, Limits(cap, 10_000)) as s:
                s.invoke(tiny)
        except SandboxError as exc:
            return f"{exc.kind}: {exc}"[:200]
        return "ran"

    floor = MIN_MEMORY_MIB
    for mib in range(MIN_MEMORY_MIB, 0, -1):  # the real smallest cap the runtime starts in
        if bypass_floor(mib) != "ran":
            break
        floor = mib
    log(f"   Python runtime starts with {floor} MiB (MIN_MEMORY_MIB {MIN_MEMORY_MIB})")
    for cap in caps:
        row: dict[str, Any] = {"cap_mib": cap}
        for kind, art in (("core", b.core_mean), ("python", b.py_mean)):
            t0 = time.perf_counter()
            bypass = kind == "python" and cap < MIN_MEMORY_MIB
            refused = ok(art, 1, cap)[1] if bypass else ""
            lo, hi, probes, last_err = 0, readings_for_bytes(cap * MIB) + 1, 0, ""
            good, last_err = ok(art, 1, cap, bypass)
            probes += 1
            if good:
                lo = 1
                while hi - lo > max(1, int(rel_tol * lo)):
                    mid = (lo + hi) // 2
                    good, err = ok(art, mid, cap, bypass)
                    probes += 1
                    if good:
                        lo = mid
                    else:
                        hi, last_err = mid, err
            if bypass:  # what the node does at this cap: refuse; what the runtime could do
                row[kind] = {
                    "max_readings": 0,
                    "refused": refused[:200],
                    "max_readings_without_floor_check": lo,
                    "probes": probes,
                }
                log(
                    f"   {cap:4d} MiB {kind}: refused (floor {MIN_MEMORY_MIB} MiB); "
                    f"{lo:,} readings without the floor check"
                )
                continue
            row[kind] = {
                "max_readings": lo,
                "blob_bytes": len(encode({"d": head(pool, 1)})) + (lo - 1) * BYTES_PER_READING,
                "fraction_of_cap": lo * BYTES_PER_READING / (cap * MIB),
                "first_failure": last_err[:200],
                "probes": probes,
                "search_s": time.perf_counter() - t0,
            }
            log(
                f"   {cap:4d} MiB {kind}: {lo:,} readings "
                f"({row[kind]['fraction_of_cap']:.0%} of the cap as input, {probes} probes)"
            )
        rows.append(row)
    return {
        "rows": rows,
        "bytes_per_reading": BYTES_PER_READING,
        "relative_tolerance": rel_tol,
        "python_min_memory_mib_declared": MIN_MEMORY_MIB,
        "python_min_memory_mib_measured": floor,
    }


# --- 6. artifact bytes -----------------------------------------------------------------------
def bench_artifacts(b: Bench) -> dict[str, Any]:
    log("6. artifact bytes")
    funcs = {}
    for src in sorted(EXAMPLES.glob("*.py")):
        art = build_python(src, key=b.key)
        funcs[art.name] = {
            "bytes": len(art),
            "payload_bytes": len(art.payload),
            "target": verdict(len(art) / 1024, 64.0, higher_is_better=False),
        }
    rt = len(b.runtime)
    compiled = engine.cache_path("component", b.runtime.payload_sha256)
    out = {
        "python_functions": funcs,
        "core_mean_bytes": len(b.core_mean),
        "runtime_bytes": rt,
        "runtime_compiled_cache_bytes": compiled.stat().st_size if compiled.exists() else None,
        "seed_unikernel_image_bytes": SEED_UNIKERNEL_BYTES,
        "all_met": all(f["target"]["met"] for f in funcs.values()),
        "largest_function_vs_runtime": max(f["bytes"] for f in funcs.values()) / rt,
        "largest_function_vs_unikernel": max(f["bytes"] for f in funcs.values())
        / SEED_UNIKERNEL_BYTES,
    }
    for name, f in funcs.items():
        log(f"   {name}: {f['bytes']:,} B")
    log(f"   runtime {rt:,} B, core mean {len(b.core_mean):,} B")
    return out


# --- plots -----------------------------------------------------------------------------------
def plot_cold_start(cs: dict[str, Any], path: Path) -> None:
    base = cs["baseline"]
    labels = [
        "python -c pass\n(sys.executable)",
        "python -c pass\n(python on PATH)",
        "Python fn\nstart (mem)",
        "Python fn\ninvocation (mem)",
        "Python fn\nstart (disk)",
        "Python fn\ninvocation (disk)",
        "core\nstart",
        "core\ninvocation",
    ]
    keys = [
        (base["subprocess_sys_executable_ms"], "grey"),
        (base["python_on_path_ms"], "darkgrey"),
        (cs["python_memory_cache"]["start_ms"], "tab:blue"),
        (cs["python_memory_cache"]["invocation_ms"], "tab:blue"),
        (cs["python_disk_cache"]["start_ms"], "tab:cyan"),
        (cs["python_disk_cache"]["invocation_ms"], "tab:cyan"),
        (cs["core"]["start_ms"], "tab:orange"),
        (cs["core"]["invocation_ms"], "tab:orange"),
    ]
    p50 = [k["p50"] for k, _ in keys]
    err = [[k["p50"] - k["p10"] for k, _ in keys], [k["p90"] - k["p50"] for k, _ in keys]]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    x = np.arange(len(labels))
    ax.bar(x, p50, yerr=err, color=[c for _, c in keys], capsize=3)
    for xi, v in zip(x, p50, strict=True):
        ax.annotate(
            f"{v:.3g}", (xi, v), textcoords="offset points", xytext=(14, 2), ha="left", fontsize=8
        )
    ax.axhline(5.0, ls="--", color="tab:blue", lw=1, label="Python target 5 ms")
    ax.axhline(0.1, ls="--", color="tab:orange", lw=1, label="core target 0.1 ms")
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("p50 time, ms (log; bars p10-p90)")
    ax.set_title("Cold start: fresh sandbox vs a new CPython process")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_transfer(tr: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = [r["size_mb"] for r in tr["rows"]]
    for name, color, label in (
        ("native_memmove", "grey", "native memmove (baseline)"),
        ("python", "tab:blue", "Python function (file write + guest read)"),
        ("core", "tab:orange", "core module (memory write)"),
    ):
        ax.plot(
            sizes, [r[name]["mb_per_s_p50"] for r in tr["rows"]], "o-", color=color, label=label
        )
    ax.axhline(500, ls="--", color="red", lw=1, label="target 500 MB/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FDS1 blob size, MB")
    ax.set_ylabel("throughput p50, MB/s (log)")
    ax.set_title("Broker -> sandbox transfer")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mean(mean: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = ("compute", "end_to_end")
    x = np.arange(len(groups))
    w = 0.26
    series = (
        ("native CPython", mean["native_ms"]["compute"]["p50"], mean["native_ms"]["end_to_end"]),
        ("sandboxed Python", mean["python"]["compute_ms"]["p50"], mean["python"]["end_to_end_ms"]),
        ("core module (WAT)", mean["core"]["compute_ms"]["p50"], mean["core"]["end_to_end_ms"]),
    )
    for i, ((label, comp, e2e), color) in enumerate(
        zip(series, ("grey", "tab:blue", "tab:orange"), strict=True)
    ):
        vals = [comp, e2e["p50"]]
        bars = ax.bar(x + (i - 1) * w, vals, w, label=label, color=color)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, ["compute only", "end to end\n(transfer+start+compute+result)"])
    ax.set_ylabel("p50, ms")
    ax.set_title(
        f"Mean over {mean['readings']:,} readings "
        f"(Python {mean['python']['ratio_compute']:.2f}x / "
        f"{mean['python']['ratio_end_to_end']:.2f}x native; target <= 4x)",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_throughput(tp: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    kinds = ("python", "core")
    x = np.arange(len(kinds))
    w = 0.27
    series = (
        ("tasks_per_s", "tab:blue", "orchestrator, capacity 2"),
        ("baseline_2_threads_direct_tasks_per_s", "darkgrey", "baseline: 2 threads, direct loop"),
        ("baseline_serial_direct_tasks_per_s", "grey", "baseline: serial fetch+encode+run"),
    )
    for i, (key, color, label) in enumerate(series):
        bars = ax.bar(x + (i - 1) * w, [tp[k][key] for k in kinds], w, color=color, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.axhline(300, ls="--", color="red", lw=1, label="target 300 tasks/s")
    ax.set_xticks(x, [f"{k} mean\n({tp['readings_per_task']} readings)" for k in kinds])
    ax.set_ylabel("tasks per second")
    ax.set_title(f"Node throughput, {tp['tasks']} tasks submitted at once (2 cores)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_memory(mem: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    caps = [r["cap_mib"] for r in mem["rows"]]
    for kind, color in (("core", "tab:orange"), ("python", "tab:blue")):
        pts = [(r["cap_mib"], r[kind]["max_readings"]) for r in mem["rows"]]
        ax.plot(
            [c for c, n in pts if n > 0],
            [n for c, n in pts if n > 0],
            "o-",
            color=color,
            label=f"{kind} mean",
        )
        for r in mem["rows"]:
            d = r[kind]
            if d["max_readings"] == 0 and d.get("max_readings_without_floor_check"):
                c, n = r["cap_mib"], d["max_readings_without_floor_check"]
                ax.plot([c], [n], "o", mfc="none", color=color)
                ax.annotate(
                    f"{kind} refused at {c} MiB\n(floor {mem['python_min_memory_mib_declared']}"
                    f" MiB); hollow: without\nthe floor check",
                    (c, n),
                    xytext=(10, 4),
                    textcoords="offset points",
                    fontsize=7,
                    color=color,
                )
    ideal = [c * MIB / BYTES_PER_READING for c in caps]
    ax.plot(caps, ideal, ":", color="grey", label=f"cap / {BYTES_PER_READING} B per reading")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(caps, [str(c) for c in caps])
    ax.set_xlabel("sandbox memory cap, MiB")
    ax.set_ylabel("largest dataset processed, readings")
    ax.set_title("Largest dataset vs memory cap (cf. FADES fig. 4)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_artifacts(art: dict[str, Any], path: Path) -> None:
    items = [(f"{n}.py", f["bytes"], "tab:blue") for n, f in art["python_functions"].items()]
    items += [
        ("mean_core.wat\n(core)", art["core_mean_bytes"], "tab:orange"),
        ("seed unikernel\nimage", art["seed_unikernel_image_bytes"], "grey"),
        ("Python runtime\n(once per node)", art["runtime_bytes"], "tab:purple"),
    ]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(items))
    bars = ax.bar(x, [v for _, v, _ in items], color=[c for _, _, c in items])
    ax.bar_label(bars, labels=[_human(v) for _, v, _ in items], fontsize=8)
    ax.axhline(64 * 1024, ls="--", color="red", lw=1, label="target 64 KiB per Python function")
    ax.set_yscale("log")
    ax.set_xticks(x, [n for n, _, _ in items], fontsize=8)
    ax.set_ylabel("artifact bytes (log)")
    ax.set_title("What travels to a node per function")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _human(n: float) -> str:
    for unit, div in (("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def plot_breakdown(tp: dict[str, Any], mean: dict[str, Any], path: Path) -> None:
    stages = ("retrieval", "transfer", "start", "compute", "result")
    colors = ("tab:green", "tab:purple", "tab:red", "tab:blue", "tab:brown")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    ax = axes[0]
    kinds = ("python", "core")
    for i, kind in enumerate(kinds):
        t = tp[kind]["representative_timing_ms"]
        bottom = 0.0
        for s, c in zip(stages, colors, strict=True):
            ax.bar(i, t.get(s, 0.0), bottom=bottom, color=c, label=s if i == 0 else None)
            bottom += t.get(s, 0.0)
        ax.annotate(f"{bottom:.2f} ms", (i, bottom), ha="center", xytext=(0, 3),
                    textcoords="offset points")  # fmt: skip
    ax.set_xticks(range(len(kinds)), [f"{k} mean" for k in kinds])
    ax.set_ylabel("ms")
    ax.set_title(f"Orchestrator task, {tp['readings_per_task']} readings from SQLite", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    for i, kind in enumerate(kinds):
        e2e = mean[kind]["end_to_end_ms"]["p50"]
        comp = mean[kind]["compute_ms"]["p50"]
        ax.bar(i, comp, color=colors[3])
        ax.bar(
            i,
            e2e - comp,
            bottom=comp,
            color="lightgrey",
            label="transfer+start+result" if i == 0 else None,
        )
        ax.annotate(
            f"{e2e:.1f} ms", (i, e2e), ha="center", xytext=(0, 3), textcoords="offset points"
        )
    nat = mean["native_ms"]["end_to_end"]["p50"]
    ax.bar(2, nat, color="grey")
    ax.annotate(f"{nat:.1f} ms", (2, nat), ha="center", xytext=(0, 3), textcoords="offset points")
    ax.set_xticks(range(3), ["python mean", "core mean", "native CPython"])
    ax.set_title(f"Sandbox run, {mean['readings']:,} readings (p50)", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle("Where a task's time goes (representative task per function kind)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sizes")
    args = ap.parse_args(argv)
    q = args.quick
    RESULTS.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fades-bench-") as tmp:
        b = Bench(Path(tmp))
        res: dict[str, Any] = {
            "meta": {
                "quick": q,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "load_avg_start": os.getloadavg(),
                "runtime_build_or_cache_s": b.runtime_build_s,
            }
        }
        res["cold_start"] = bench_cold_start(
            b, reps=40 if q else 200, disk_reps=5 if q else 20, proc_reps=5 if q else 20
        )
        res["transfer"] = bench_transfer(
            b, [1, 10, 30] if q else [1, 3, 10, 30, 100], 3 if q else 7
        )
        res["mean_1m"] = bench_mean(b, 1_000_000, 3 if q else 9)
        res["throughput"] = bench_throughput(b, 200 if q else 500, 100, 30 if q else 100)
        res["memory"] = bench_memory(
            b, [16, 32, 64] if q else [16, 32, 64, 128, 256, 512], 0.02 if q else 0.005
        )
        res["artifacts"] = bench_artifacts(b)
    res["meta"]["load_avg_end"] = os.getloadavg()
    res["meta"]["wall_s"] = time.perf_counter() - t_all
    out = RESULTS / "single_node.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    plot_cold_start(res["cold_start"], RESULTS / "single_node_cold_start.png")
    plot_transfer(res["transfer"], RESULTS / "single_node_transfer.png")
    plot_mean(res["mean_1m"], RESULTS / "single_node_mean_1m.png")
    plot_throughput(res["throughput"], RESULTS / "single_node_throughput.png")
    plot_memory(res["memory"], RESULTS / "single_node_memory_cap.png")
    plot_artifacts(res["artifacts"], RESULTS / "single_node_artifacts.png")
    plot_breakdown(res["throughput"], res["mean_1m"], RESULTS / "single_node_breakdown.png")
    log(f"wrote {out} and plots in {res['meta']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
