"""Sandbox worker processes: their cost, their scaling, and the bombs they contain.

Run ``python benchmarks/bench_sandbox_procs.py [--quick]``. Writes
``benchmarks/results/sandbox_procs.json``. All figures come from one run:

1. Per-task latency, in-process sandbox vs a worker process (``WorkerPool``), for a Python
   function (examples/functions/minmaxmean.py) and the core mean (mean_core.wat), p50/p99.
2. Throughput at capacity 1 and 2: k threads sharing in-process sandboxes vs k threads each
   feeding a worker process (issue 14 measured threads 1.36x / 0.61x, processes 1.97x / 1.80x).
3. The bombs, before (the code at ``--before``, default the commit before this work, run
   from a ``git archive`` of it) and after (this tree), each in its own process:
   ``time.sleep(1e9)`` in Python (budget 1 s), a 30 M-element list result (1 GiB cap), a core
   ``table.grow`` to 200 M elements (16 MiB cap), and a soak of 2,000 core mean runs (RSS
   and live stores every 500 runs). Host RSS is the peak of the process that runs the node
   side (``ru_maxrss``); the worker's own peak is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BEFORE = "26c5db3"  # main before the sandbox hardening
SLEEP_BUDGET_MS, SLEEP_WAIT_S = 1000, 20.0


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def log(msg: str) -> None:
    print(msg, flush=True)


# --- child cases: run with PYTHONPATH set to one tree's src ----------------------------------
def _peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _statm_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def child(case: str, mode: str) -> dict[str, Any]:
    import gc

    import wasmtime

    from fades.broker.base import Dataset
    from fades.functions.artifact import create
    from fades.functions.build import build_core, build_runtime
    from fades.functions.keys import SigningKey
    from fades.sandbox import CoreSandbox, Limits, PythonSandbox
    from fades.sandbox.wire import encode

    key = SigningKey.generate("bench")
    n = 1000
    ds = Dataset.from_records(
        [float(i) for i in range(n)], [20.0] * n, ["temperature"] * n, ["r1"] * n, ["d"] * n
    )
    blob = encode({"t": ds})
    pool: Any = None
    if mode == "process":
        from fades.sandbox import HostLimits
        from fades.sandbox.procs import WorkerPool

        pool = WorkerPool(1, HostLimits())

    def run(art: Any, runtime: Any, limits: Any) -> Any:
        if pool is not None:
            return pool.run(art, runtime, blob, limits)
        if art.kind == "core":
            return CoreSandbox().run(art, blob, limits)
        return PythonSandbox(runtime).run(art, blob, limits)

    def outcome(art: Any, runtime: Any, limits: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            res = run(art, runtime, limits)
            out = f"ok ({res.bytes_out} bytes)"
        except Exception as exc:
            out = f"{type(exc).__name__}: {str(exc)[:160]}"
        return {"outcome": out, "seconds": time.perf_counter() - t0}

    out: dict[str, Any] = {"case": case, "mode": mode}
    if case in ("sleep", "biglist"):
        rt = build_runtime(key=key)
        if pool is not None:
            pool.warm(rt)
        if case == "sleep":
            src = b"import time\ndef main(data, params):\n    time.sleep(1e9)\n"
            limits = Limits(64, SLEEP_BUDGET_MS)
        else:
            src = b"def main(data, params):\n    return [0.5] * 30_000_000\n"
            limits = Limits(1024, 120_000)
        base = _peak_mib()
        out.update(outcome(create("python", case, src, key=key), rt, limits))
        out["host_peak_rss_mib"], out["host_rss_before_mib"] = _peak_mib(), base
    elif case == "table":
        wat = """(module (memory (export "memory") 1) (table $t 1 funcref)
          (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "fades_run") (param i32 i32) (result i32)
            (if (i32.eq (table.grow $t (ref.null func) (i32.const 200000000)) (i32.const -1))
              (then (return (i32.const 3))))
            (i32.const 0)))"""
        base = _peak_mib()
        art = create("core", "table", bytes(wasmtime.wat2wasm(wat)), key=key)
        out.update(outcome(art, None, Limits(16, 60_000)))
        gc.collect()
        out["host_peak_rss_mib"], out["host_rss_before_mib"] = _peak_mib(), base
        out["host_rss_after_mib"] = _statm_mib()
    elif case == "soak":
        art = build_core(REPO / "examples" / "functions" / "mean_core.wat", key=key)
        series = []
        for i in range(2001):
            if i % 500 == 0:
                gc.collect()
                stores = sum(1 for o in gc.get_objects() if isinstance(o, wasmtime.Store))
                series.append({"runs": i, "rss_mib": _statm_mib(), "live_stores": stores})
            if i < 2000:
                run(art, None, Limits(64, 5000))
        out["series"] = series
    if pool is not None:
        pool.close()
        out["worker_peak_rss_mib"] = _peak_mib(resource.RUSAGE_CHILDREN)
    return out


def run_child(src: Path, case: str, mode: str, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, "--mode", mode]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            "case": case,
            "mode": mode,
            "outcome": f"never ended: killed by the benchmark after {timeout:.0f} s",
            "seconds": time.perf_counter() - t0,
        }
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"case": case, "mode": mode, "outcome": f"child failed: {p.stderr[-600:]}"}
    res: dict[str, Any] = json.loads(lines[-1])
    return res


def bombs(before_src: Path, quick: bool) -> dict[str, Any]:
    after_src = REPO / "src"
    out: dict[str, Any] = {}
    cases = [("sleep", SLEEP_WAIT_S), ("table", 300.0), ("soak", 600.0)]
    if not quick:
        cases.insert(1, ("biglist", 600.0))
    for case, timeout in cases:
        before = run_child(before_src, case, "inprocess", timeout)
        after = run_child(after_src, case, "inprocess" if case == "soak" else "process", timeout)
        out[case] = {"before": before, "after": after}
        log(f"   {case}: before {summarise(before)}; after {summarise(after)}")
    return out


def summarise(r: dict[str, Any]) -> str:
    if "series" in r:
        s = r["series"]
        first, last = s[0], s[-1]
        return (
            f"RSS {first['rss_mib']:.0f} -> {last['rss_mib']:.0f} MiB, "
            f"live stores {last['live_stores']}"
        )
    bits = [str(r.get("outcome")), f"{r.get('seconds', 0):.2f} s"]
    if "host_peak_rss_mib" in r:
        bits.append(f"host peak {r['host_peak_rss_mib']:.0f} MiB")
    return ", ".join(bits)


def _workers_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of the worker processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


# --- latency and throughput (this tree) --------------------------------------------------------
def speed(reps: int, tasks: int) -> dict[str, Any]:
    from fades.broker.base import Dataset
    from fades.functions.build import build_core, build_python, build_runtime
    from fades.functions.keys import SigningKey
    from fades.sandbox import CoreSandbox, HostLimits, Limits, PythonSandbox
    from fades.sandbox.procs import WorkerPool
    from fades.sandbox.wire import encode

    key = SigningKey.generate("bench")
    rt = build_runtime(key=key)
    ex = REPO / "examples" / "functions"
    fns = {
        "python": (build_python(ex / "minmaxmean.py", key=key), Limits(64, 5000)),
        "core": (build_core(ex / "mean_core.wat", key=key), Limits(16, 5000)),
    }
    n = 100
    ds = Dataset.from_records(
        [float(i) for i in range(n)], [20.0 + i % 7 for i in range(n)], ["temperature"] * n,
        ["r1"] * n, ["d"] * n,
    )  # fmt: skip
    blob = encode({"t": ds})
    inproc = HostLimits(mode="inprocess")
    py_sb, core_sb = PythonSandbox(rt, inproc), CoreSandbox(inproc)
    pool = WorkerPool(2, HostLimits())
    pool.warm(rt)

    def direct(kind: str) -> None:
        art, limits = fns[kind]
        (core_sb if kind == "core" else py_sb).run(art, blob, limits)

    def proc(kind: str) -> None:
        art, limits = fns[kind]
        pool.run(art, rt if kind == "python" else None, blob, limits)

    out: dict[str, Any] = {"latency_ms": {}, "throughput": {}}
    for kind in fns:
        runners = {"inprocess": direct, "process": proc}
        xs: dict[str, list[float]] = {label: [] for label in runners}
        for _ in range(20):
            for fn in runners.values():
                fn(kind)
        cpu = {label: 0.0 for label in runners}
        for _ in range(reps):  # interleaved: the machine's noise hits both alike
            for label, fn in runners.items():
                c0, w0 = time.thread_time(), _workers_cpu(pool.pids())
                t0 = time.perf_counter()
                fn(kind)
                xs[label].append((time.perf_counter() - t0) * 1e3)
                cpu[label] += time.thread_time() - c0 + _workers_cpu(pool.pids()) - w0
        for label, v in xs.items():
            p50, p99 = statistics.median(v), pct(v, 0.99)
            cpu_ms = cpu[label] / reps * 1e3
            out["latency_ms"][f"{kind}_{label}"] = {
                "p50": p50, "p99": p99, "n": reps, "cpu_ms_per_task": cpu_ms,
            }  # fmt: skip
            log(f"   latency {kind} {label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                f"CPU {cpu_ms:.2f} ms/task (node + worker)")  # fmt: skip
    for kind in fns:
        for label, fn in (("threads", direct), ("processes", proc)):
            rates, cpus = {}, {}
            for k in (1, 2):
                per = tasks // k

                def loop(fn: Any = fn, per: int = per, kind: str = kind) -> None:
                    for _ in range(per):
                        fn(kind)

                ths = [threading.Thread(target=loop) for _ in range(k)]
                c0 = time.process_time() + _workers_cpu(pool.pids())
                t0 = time.perf_counter()
                for th in ths:
                    th.start()
                for th in ths:
                    th.join()
                rates[k] = per * k / (time.perf_counter() - t0)
                cpus[k] = (time.process_time() + _workers_cpu(pool.pids()) - c0) / (per * k) * 1e3
            out["throughput"][f"{kind}_{label}"] = {
                "capacity_1_per_s": rates[1], "capacity_2_per_s": rates[2],
                "scaling_2_vs_1": rates[2] / rates[1],
                "cpu_ms_per_task_capacity_1": cpus[1], "cpu_ms_per_task_capacity_2": cpus[2],
            }  # fmt: skip
            log(
                f"   throughput {kind} {label}: c1 {rates[1]:.0f}/s, c2 {rates[2]:.0f}/s, "
                f"x{rates[2] / rates[1]:.2f}; CPU/task {cpus[1]:.2f} -> {cpus[2]:.2f} ms"
            )
    pool.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, no 30 M list")
    ap.add_argument("--before", default=BEFORE, help="git revision for the 'before' bombs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="inprocess", help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=["speed", "bombs"], help="run one part")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.mode)), flush=True)
        return 0
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": args.quick,
        "grace_ms": 500,
    }
    if args.only in (None, "speed"):
        log("1-2. latency and throughput, in-process vs worker processes")
        load0 = os.getloadavg()[0]
        results["speed"] = speed(100 if args.quick else 400, 200 if args.quick else 800)
        # 2 cores shared with other work: scaling figures mean little above a load of ~2
        results["speed"]["loadavg_1min_before_after"] = [load0, os.getloadavg()[0]]
    if args.only in (None, "bombs"):
        log(f"3. bombs, before ({args.before}) and after")
        with tempfile.TemporaryDirectory(prefix="fades-before-") as tmp:
            archive = subprocess.run(
                ["git", "archive", args.before, "src"], cwd=REPO, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            results["before_revision"] = args.before
            results["bombs"] = bombs(Path(tmp) / "src", args.quick)
            results["bombs"]["loadavg_1min_after"] = os.getloadavg()[0]
    out = HERE / "results" / "sandbox_procs.json"
    out.parent.mkdir(exist_ok=True)
    if out.exists() and args.only:  # keep the other part of an earlier run
        old = json.loads(out.read_text())
        results = {**old, **results}
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
