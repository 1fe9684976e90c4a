"""Pre-warmed fresh Python instances (``fades.sandbox.pool``): what a tiny task costs.

All from one run:

1. In-process, a tiny Python task (noop on 10 readings), whole invocation (take or make an
   instance, invoke, close): **fresh** (instantiated for the task, the old path), **pooled,
   instantiated only** (no warm-up call), **pooled, warmed** (instantiated and warmed),
   **pooled, function loaded ahead** (warmed, and the function's module loaded: the default
   during a streak of one function), and **reused** (one live instance invoked again: the
   floor, not isolated). Ratio
   fresh / pooled; target pooled p50 <= 1 ms and >= 5x faster than fresh.
2. The same through one sandbox worker process (``WorkerPool(1)``), pool off vs on, with
   tasks spaced 50 ms apart (the pool refills while the worker is idle).
3. Memory: PSS (``/proc/<pid>/smaps_rollup``) of a worker holding 4 ready instances vs none.
4. Tasks/s through one node (capacity 2, mean over 100 readings from SQLite), pool off vs
   on, against a native pool of 2 processes doing the same fetch, encode, decode and call in
   CPython. Target >= 0.5 of the native pool. Beside the rates (which on this shared machine
   depend on how many other processes compete), the CPU time per task of every process
   involved (the node and its workers; the two native processes), which does not.

With ``--before SRC`` (a source tree, e.g. a checkout of the previous commit's ``src``),
sections 1 and 4 also run in a child process on that code, in the same run, and the plot
sets them side by side.

Run ``python benchmarks/bench_pool.py [--quick]``. Writes
``benchmarks/results/single_node_pool.json`` and ``single_node_pool.png`` beside it. About
two minutes; ``--quick`` under a minute.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml

from _common import (
    RESULTS,
    Bench,
    dataset,
    log,
    session,
    summary,
    verdict,
    write_result,
)
from bench_throughput import _native_batch, cpu_s, make_node, task
from fades.functions.artifact import Artifact
from fades.node import Node
from fades.sandbox import HostLimits
from fades.sandbox.base import Limits
from fades.sandbox.pool import InstancePool
from fades.sandbox.procs import Worker, WorkerPool
from fades.sandbox.wire import encode

TINY_LIMITS = Limits(64, 5000)


def latency_inprocess(b: Bench, reps: int) -> dict[str, Any]:
    log("1. tiny Python task in-process: fresh vs pooled vs reused")
    tiny = encode({"d": dataset(10)})
    sb, art = b.python, b.py_noop
    for _ in range(5):  # warm code paths
        sb.run(art, tiny, TINY_LIMITS)

    def fresh() -> list[float]:
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            with sb.open(art, TINY_LIMITS) as s:
                s.invoke(tiny)
            out.append(time.perf_counter() - t0)
        return out

    def pooled(warm: bool, bind: bool = True) -> tuple[list[float], dict[str, Any]]:
        pool = InstancePool(sb, None, min_size=2, max_size=2, max_mib=1024, warm=warm, bind=bind)
        out = []
        try:
            for _ in range(reps):
                pool.wait_ready(2)  # tasks spaced enough for the refill: the request path only
                t0 = time.perf_counter()
                with pool.session(art, TINY_LIMITS) as s:
                    s.invoke(tiny)
                out.append(time.perf_counter() - t0)
            st = pool.stats()
            st["prepare_ms"] = summary(pool.prepare_s, 1e3)
            return out, st
        finally:
            pool.close()

    def reused() -> list[float]:
        out = []
        with sb.open(art, TINY_LIMITS) as s:
            s.invoke(tiny)
            for _ in range(reps):
                t0 = time.perf_counter()
                s.invoke(tiny)
                out.append(time.perf_counter() - t0)
        return out

    f = fresh()
    p_cold, st_cold = pooled(False, bind=False)
    p_unbound, st_unbound = pooled(True, bind=False)
    p, st = pooled(True)
    r = reused()
    res = {
        "fresh_ms": summary(f, 1e3),
        "pooled_instantiated_only_ms": summary(p_cold, 1e3),
        "pooled_not_loaded_ahead_ms": summary(p_unbound, 1e3),
        "pool_not_loaded_ahead": st_unbound,
        "pooled_ms": summary(p, 1e3),
        "reused_ms": summary(r, 1e3),
        "pool_instantiated_only": st_cold,
        "pool": st,
    }
    res["speedup_pooled_vs_fresh"] = res["fresh_ms"]["p50"] / res["pooled_ms"]["p50"]
    res["speedup_instantiated_only_vs_fresh"] = (
        res["fresh_ms"]["p50"] / res["pooled_instantiated_only_ms"]["p50"]
    )
    res["target_p50_1ms"] = verdict(res["pooled_ms"]["p50"], 1.0, higher_is_better=False)
    res["target_5x"] = verdict(res["speedup_pooled_vs_fresh"], 5.0, higher_is_better=True)
    log(
        f"   p50: fresh {res['fresh_ms']['p50']:.3f} ms, pooled (instantiated only) "
        f"{res['pooled_instantiated_only_ms']['p50']:.3f} ms, warmed "
        f"{res['pooled_not_loaded_ahead_ms']['p50']:.3f} ms, + function loaded ahead "
        f"{res['pooled_ms']['p50']:.3f}"
        f" ms ({res['speedup_pooled_vs_fresh']:.1f}x), reused {res['reused_ms']['p50']:.3f} ms; "
        f"preparing one: {st['prepare_ms']['p50']:.2f} ms off the request path"
    )
    return res


def latency_workers(b: Bench, reps: int) -> dict[str, Any]:
    log("2. tiny Python task through one worker process, pool off vs on (50 ms apart)")
    tiny = encode({"d": dataset(10)})
    out: dict[str, Any] = {}
    for name, host in (
        ("pool_off", HostLimits(py_pool_min=0, py_pool_max=0)),
        ("pool_on", HostLimits()),
    ):
        wp = WorkerPool(1, host)
        try:
            wp.warm(b.runtime)
            for _ in range(5):
                wp.run(b.py_noop, b.runtime, tiny, TINY_LIMITS)
            times = []
            for _ in range(reps):
                time.sleep(0.05)
                t0 = time.perf_counter()
                wp.run(b.py_noop, b.runtime, tiny, TINY_LIMITS)
                times.append(time.perf_counter() - t0)
            (w,) = wp._all
            out[name] = {"invocation_ms": summary(times, 1e3), "pool": w.call(("stats",))}
        finally:
            wp.close()
    out["speedup"] = (
        out["pool_off"]["invocation_ms"]["p50"] / out["pool_on"]["invocation_ms"]["p50"]
    )
    log(
        f"   p50: pool off {out['pool_off']['invocation_ms']['p50']:.3f} ms, pool on "
        f"{out['pool_on']['invocation_ms']['p50']:.3f} ms ({out['speedup']:.1f}x)"
    )
    return out


def _pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def pool_memory(b: Bench) -> dict[str, Any]:
    log("3. memory of ready instances (PSS of a worker process)")
    res: dict[str, Any] = {}
    for n in (0, 4):
        w = Worker(HostLimits(py_pool_min=n, py_pool_max=n, py_pool_max_mib=1024))
        try:
            w.prepare(b.runtime)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                st = w.call(("stats",))
                if n == 0 or st["ready"] >= n:
                    break
                time.sleep(0.05)
            time.sleep(0.3)
            res[f"worker_pss_mib_{n}_ready"] = _pss_kib(w.pid) / 1024
            res[f"worker_anon_mib_{n}_ready"] = w.anon_rss() / (1 << 20)
            if n:
                res["measured_instance_bytes"] = st["instance_bytes"]
        finally:
            w.kill()
    res["pss_mib_per_ready_instance"] = (
        res["worker_pss_mib_4_ready"] - res["worker_pss_mib_0_ready"]
    ) / 4
    log(
        f"   worker PSS {res['worker_pss_mib_0_ready']:.1f} MiB with none ready, "
        f"{res['worker_pss_mib_4_ready']:.1f} MiB with 4: "
        f"{res['pss_mib_per_ready_instance']:.2f} MiB per ready instance"
    )
    return res


def throughput(b: Bench, tasks: int, readings: int) -> dict[str, Any]:
    log(f"4. tasks/s through one node (capacity 2, {tasks} tasks), pool off / on vs native")
    out: dict[str, Any] = {"tasks": tasks, "readings_per_task": readings}
    with tempfile.TemporaryDirectory(prefix="fades-bench-pool-") as tmp:
        home = Path(tmp)
        make_node(b, home, readings)
        with concurrent.futures.ProcessPoolExecutor(2) as ex:
            list(ex.map(_native_batch, [str(home)] * 2, [20, 20]))  # start, import, warm
            procs = list(ex._processes)  # the two native processes
            c0 = cpu_s(procs)
            t0 = time.perf_counter()
            list(ex.map(_native_batch, [str(home)] * 2, [tasks // 2] * 2))
            native = tasks / (time.perf_counter() - t0)
            native_cpu = (cpu_s(procs) - c0) / tasks
        out["native_2_process_tasks_per_s"] = native
        out["native_cpu_ms_per_task"] = native_cpu * 1e3
        for name, pool in (
            ("pool_off", {"min": 0, "max": 0}),
            ("pool_on", {}),
        ):
            (home / "node.yaml").write_text(yaml.safe_dump({"capacity": 2, "python_pool": pool}))
            with Node(home, capacity=2) as node:
                _add(node, (b.runtime, b.py_mean))
                orc = node.orchestrator
                for tid in [orc.submit(task("bench_mean", 64)) for _ in range(10)]:
                    orc.wait(tid, timeout=120)
                time.sleep(0.5)  # the pools fill
                pids = [os.getpid(), *node.orchestrator.sandboxes.worker_pids()]
                c0 = cpu_s(pids)
                t0 = time.perf_counter()
                ids = [orc.submit(task("bench_mean", 64)) for _ in range(tasks)]
                recs = [orc.wait(tid, timeout=300) for tid in ids]
                rate = tasks / (time.perf_counter() - t0)
                cpu = (cpu_s(pids) - c0) / tasks
                failed = [r.error for r in recs if r.status != "done"]
            out[name] = {
                "tasks_per_s": rate,
                "ratio_vs_native_2_process": rate / native,
                "cpu_ms_per_task": cpu * 1e3,
                "cpu_ratio_native_over_node": native_cpu / cpu,
                "failed": failed[:3],
            }
            log(
                f"   {name}: {rate:.0f} tasks/s = {rate / native:.2f} of native ({native:.0f}/s);"
                f" CPU per task {cpu * 1e3:.2f} ms (native {native_cpu * 1e3:.2f} ms)"
            )
        out["target"] = verdict(
            out["pool_on"]["ratio_vs_native_2_process"], 0.5, higher_is_better=True
        )
    return out


def _plot_before_after(ax: Any, ba: dict[str, list[float]]) -> None:
    groups = [
        ("tiny task p50, ms\n(fn loaded ahead)", ba["tiny_p50_ms"]),
        ("Python CPU per task, ms\n(node + workers)", ba["python_cpu_ms_per_task"]),
    ]
    for gi, (_, (old, new)) in enumerate(groups):
        for k, (v, c) in enumerate(((old, "#d99"), (new, "tab:green"))):
            x = gi * 3 + k
            ax.bar(x, v, color=c, label=("before", "after")[k] if gi == 0 else None)
            ax.annotate(f"{v:.2f}", (x, v), ha="center", fontsize=8,
                        textcoords="offset points", xytext=(0, 2))  # fmt: skip
    ax.set_xticks([0.5, 3.5], [g[0] for g in groups], fontsize=8)
    ax.set_ylabel("ms")
    r = ba["python_ratio_vs_native"]
    ax.set_title(f"Before vs after, same run (Python tasks/s ÷ native: {r[0]:.2f} -> {r[1]:.2f})",
                 fontsize=9)  # fmt: skip
    ax.legend(fontsize=8)
    ax.margins(y=0.15)


def _add(node: Node, arts: tuple[Artifact, ...]) -> None:
    for art in arts:
        node.functions.add(art.to_bytes())


def plot(res: dict[str, Any], path: Path) -> None:
    ba = res.get("before_vs_after")
    if ba is None:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13.5, 4.8), width_ratios=[3, 2])
    else:
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(18, 4.8), width_ratios=[3, 2, 2])
        _plot_before_after(ax3, ba)
    ip, wk = res["inprocess"], res["workers"]
    bars = [
        ("fresh\n(in-process)", ip["fresh_ms"], "tab:red"),
        ("pooled,\ninstantiated only", ip["pooled_instantiated_only_ms"], "tab:orange"),
        ("pooled,\nwarmed", ip["pooled_not_loaded_ahead_ms"], "tab:olive"),
        ("pooled, fn\nloaded ahead\n(default)", ip["pooled_ms"], "tab:green"),
        ("reused\n(not fresh)", ip["reused_ms"], "grey"),
        ("worker,\npool off", wk["pool_off"]["invocation_ms"], "tab:red"),
        ("worker,\npool on", wk["pool_on"]["invocation_ms"], "tab:green"),
    ]
    x = range(len(bars))
    p50 = [s["p50"] for _, s, _ in bars]
    err = [[s["p50"] - s["p10"] for _, s, _ in bars], [s["p90"] - s["p50"] for _, s, _ in bars]]
    ax1.bar(x, p50, yerr=err, color=[c for _, _, c in bars], capsize=3)
    for xi, v in zip(x, p50, strict=True):
        ax1.annotate(f"{v:.2f}", (xi, v), textcoords="offset points", xytext=(10, 3), fontsize=8)
    ax1.axhline(1.0, ls="--", color="tab:green", lw=1, label="target 1 ms")
    ax1.set_xticks(list(x), [n for n, _, _ in bars], fontsize=8)
    ax1.set_ylabel("whole invocation, ms (p50; bars p10-p90)")
    ax1.set_title(
        f"Tiny Python task: pooled is {ip['speedup_pooled_vs_fresh']:.1f}x faster than fresh"
    )
    ax1.legend(fontsize=8)
    tp = res["throughput"]
    names = ["native CPython\n2 processes", "node,\npool off", "node,\npool on"]
    vals = [
        tp["native_2_process_tasks_per_s"],
        tp["pool_off"]["tasks_per_s"],
        tp["pool_on"]["tasks_per_s"],
    ]
    ax2.bar(range(3), vals, color=["grey", "tab:red", "tab:green"])
    for xi, v in enumerate(vals):
        ax2.annotate(f"{v:.0f}/s\n{v / vals[0]:.2f}x", (xi, v), ha="center", fontsize=8,
                     textcoords="offset points", xytext=(0, 2))  # fmt: skip
    ax2.axhline(0.5 * vals[0], ls="--", color="tab:green", lw=1, label="target 0.5 of native")
    ax2.set_xticks(range(3), names, fontsize=8)
    ax2.set_ylabel("tasks/s (mean over 100 readings)")
    ax2.set_title("Python tasks/s through one node")
    ax2.legend(fontsize=8)
    ax2.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _child(quick: bool, out: str) -> int:
    """``--child OUT``: sections 1 and 4 only, on whatever ``fades`` is first on the path."""
    with session(quick) as (b, meta):
        res = {
            "inprocess": latency_inprocess(b, reps=40 if quick else 200),
            "throughput": throughput(b, tasks=60 if quick else 300, readings=100),
        }
    Path(out).write_text(json.dumps({"meta": meta, "res": res}))
    return 0


def _before(src: str, quick: bool) -> dict[str, Any]:
    """Sections 1 and 4 in a child process on the code in ``src``."""
    log(f"-- before: sections 1 and 4 on {src}")
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        env = {**os.environ, "PYTHONPATH": src}
        cmd = [sys.executable, __file__, "--child", f.name] + (["--quick"] if quick else [])
        subprocess.run(cmd, env=env, check=True, timeout=3600)
        got: dict[str, Any] = json.loads(Path(f.name).read_text())
    got["res"]["src"] = src
    got["res"]["meta"] = got["meta"]
    log("-- after: this tree")
    return dict(got["res"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sizes")
    ap.add_argument("--before", help="also run sections 1 and 4 on this source tree")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    q = bool(args.quick)
    if args.child:
        return _child(q, args.child)
    before = _before(str(Path(args.before).resolve()), q) if args.before else None
    with session(q) as (b, meta):
        res = {
            "inprocess": latency_inprocess(b, reps=40 if q else 200),
            "workers": latency_workers(b, reps=30 if q else 150),
            "memory": pool_memory(b),
            "throughput": throughput(b, tasks=60 if q else 300, readings=100),
        }
    if before is not None:
        res["before"] = before
        bi, ai = before["inprocess"]["pooled_ms"]["p50"], res["inprocess"]["pooled_ms"]["p50"]
        bt, at = before["throughput"]["pool_on"], res["throughput"]["pool_on"]
        res["before_vs_after"] = {
            "tiny_p50_ms": [bi, ai],
            "python_tasks_per_s": [bt["tasks_per_s"], at["tasks_per_s"]],
            "python_ratio_vs_native": [
                bt["ratio_vs_native_2_process"],
                at["ratio_vs_native_2_process"],
            ],
            "python_cpu_ms_per_task": [bt["cpu_ms_per_task"], at["cpu_ms_per_task"]],
        }
        log(f"   before -> after: {json.dumps(res['before_vs_after'])}")
    out = write_result("pool", res, meta)
    plot(res, RESULTS / "single_node_pool.png")
    log(f"wrote {out} in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
