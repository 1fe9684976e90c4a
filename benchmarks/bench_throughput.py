"""Single-node benchmark 4: tasks per second through the orchestrator.

SQLite broker, capacity 2, submit all then wait all, for a mean over 100 readings, Python and
core. Baseline: the same work in a plain single-thread loop (fetch + encode + sandbox run).
Also a native pool of 2 CPython processes doing the same fetch, encode, decode and mean
(``native_2_process_tasks_per_s``); target: the node at >= 0.5 of it.

``--cpu-rounds N --before SRC``: instead, the CPU per task of the node process and of its
sandbox workers apart (``/proc/<pid>/stat``), old code and this tree alternating N times,
each in a fresh child process (CPU time per task depends much less on the machine's load
than tasks/s does). Writes ``single_node_cpu_split.json``.

With ``--before SRC`` (a source tree, e.g. a ``git archive`` of the previous commit's
``src``) the same section first runs in a child process on that code, in the same run, and
the plot sets the two side by side.

Run ``python benchmarks/bench_throughput.py [--quick] [--before SRC]`` (``make bench`` runs
it through ``run_all.py``). Writes ``benchmarks/results/single_node_throughput.json`` and its PNG.
Also draws ``single_node_breakdown.png`` (a representative task per function kind) when
``bench_mean.py`` has written its result.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import (
    MEAN_SRC,
    RESULTS,
    Bench,
    dataset,
    log,
    session,
    verdict,
    write_json,
    write_result,
)
from fades.functions.artifact import Artifact
from fades.functions.keys import public_pem
from fades.node import Node
from fades.sandbox.base import Limits
from fades.sandbox.wire import encode

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


def _native_batch(home: str, n: int) -> float:
    """In a plain CPython process: n times fetch, encode, decode and call the mean."""
    from fades.broker.broker import DataBroker
    from fades.broker.connectors.sqlite import SQLiteConnector
    from fades.guest.fades_sdk import decode
    from fades.node.limits import NodeLimits
    from fades.task import parse_task

    broker = DataBroker(
        {"sqlite": SQLiteConnector(Path(home) / "readings.db")},
        None,
        limits=NodeLimits().fetch_limits(),
    )
    ns: dict[str, Any] = {}
    exec(MEAN_SRC, ns)
    t = parse_task(task("bench_mean", 64))
    t0 = time.perf_counter()
    for _ in range(n):
        datasets, _ = broker.fetch(t.tenant, list(t.data))
        data, params = decode(encode(datasets))
        ns["main"](data, params)
    return time.perf_counter() - t0


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (all their threads): unlike a
    rate, CPU time per task hardly depends on how many other processes share the machine."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def native_rate(home: Path, tasks: int) -> tuple[float, float]:
    """Tasks/s of a native pool of 2 CPython processes doing each task's fetch, encode,
    decode and call (the mean) without a sandbox or an orchestrator, and its CPU seconds
    per task."""
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        list(ex.map(_native_batch, [str(home)] * 2, [20, 20]))  # start, import, warm
        procs = list(ex._processes)
        c0 = cpu_s(procs)
        t0 = time.perf_counter()
        list(ex.map(_native_batch, [str(home)] * 2, [tasks // 2] * 2))
        rate = tasks / (time.perf_counter() - t0)
        return rate, (cpu_s(procs) - c0) / tasks


def bench_throughput(b: Bench, tasks: int, readings: int, direct_reps: int) -> dict[str, Any]:
    log(f"4. orchestrator throughput ({tasks} tasks, {readings} readings each)")
    out: dict[str, Any] = {"tasks": tasks, "readings_per_task": readings, "capacity": 2}
    with tempfile.TemporaryDirectory(prefix="fades-bench-node-") as tmp:
        home = Path(tmp)
        make_node(b, home, readings)
        native, native_cpu = native_rate(home, tasks)
        out["native_2_process_tasks_per_s"] = native
        out["native_cpu_ms_per_task"] = native_cpu * 1e3
        log(
            f"   native CPython, 2 processes: {native:.0f} tasks/s, "
            f"CPU {native_cpu * 1e3:.2f} ms per task"
        )
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
                pids = [os.getpid(), *orc.sandboxes.worker_pids()]
                c0 = cpu_s(pids)
                t0 = time.perf_counter()
                ids = [orc.submit(task(name, mem)) for _ in range(tasks)]
                t_sub = time.perf_counter()
                recs = [orc.wait(tid, timeout=120) for tid in ids]
                wall = time.perf_counter() - t0
                cpu = (cpu_s(pids) - c0) / tasks
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
                    "ratio_vs_native_2_process": rate / native,
                    "cpu_ms_per_task": cpu * 1e3,
                    "cpu_ratio_native_over_node": native_cpu / cpu,
                    "target_half_of_native": verdict(rate / native, 0.5, higher_is_better=True),
                    "target": verdict(rate, 300.0, higher_is_better=True),
                }
                log(
                    f"   {kind}: {rate:.0f} tasks/s = {rate / native:.2f} of native, "
                    f"CPU {cpu * 1e3:.2f} ms per task (native {native_cpu * 1e3:.2f}) "
                    f"(direct loop: serial {direct_rate:.0f}/s, "
                    f"2 threads {par_rate:.0f}/s; "
                    f"submit {tasks / (t_sub - t0):.0f}/s); median stages "
                    + ", ".join(f"{s} {v:.2f}" for s, v in per_stage.items() if s != "queue")
                    + " ms"
                )
    return out


def _plot_before_after(ax: Any, tp: dict[str, Any], before: dict[str, Any]) -> None:
    kinds = ("python", "core")
    groups = [
        (f"{k}:\ntasks/s ÷ native", before[k]["ratio_vs_native_2_process"],
         tp[k]["ratio_vs_native_2_process"]) for k in kinds
    ] + [
        (f"{k}:\nnative CPU ÷ node CPU", before[k]["cpu_ratio_native_over_node"],
         tp[k]["cpu_ratio_native_over_node"]) for k in kinds
    ]  # fmt: skip
    for gi, (_, old, new) in enumerate(groups):
        for k, (v, c) in enumerate(((old, "#d99"), (new, "tab:green"))):
            x = gi * 3 + k
            ax.bar(x, v, color=c, label=("before", "after")[k] if gi == 0 else None)
            ax.annotate(f"{v:.2f}", (x, v), ha="center", fontsize=8,
                        textcoords="offset points", xytext=(0, 2))  # fmt: skip
    ax.axhline(0.5, ls="--", color="red", lw=1, label="target 0.5")
    ax.set_xticks([gi * 3 + 0.5 for gi in range(len(groups))], [g[0] for g in groups],
                  fontsize=7)  # fmt: skip
    ax.set_title("Before vs after, same run (ratios against native)", fontsize=9)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)


def plot_throughput(tp: dict[str, Any], path: Path, before: dict[str, Any] | None = None) -> None:
    if before is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    else:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
        _plot_before_after(ax2, tp, before)
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
    nat = tp["native_2_process_tasks_per_s"]
    ax.axhline(nat, ls="-", color="black", lw=1, label=f"native CPython, 2 processes ({nat:.0f}/s)")
    ax.axhline(nat / 2, ls="--", color="red", lw=1, label="target: half of native")
    for i, k in enumerate(kinds):
        rate = tp[k]["tasks_per_s"]
        ax.annotate(f"{rate / nat:.2f}x native", (i - w, rate), ha="center", xytext=(0, 12),
                    textcoords="offset points", fontsize=8)  # fmt: skip
    ax.set_xticks(x, [f"{k} mean\n({tp['readings_per_task']} readings)" for k in kinds])
    top = max(nat, *(tp[k][key] for k in kinds for key, _, _ in series))
    ax.set_ylim(0, top * 1.45)
    ax.set_ylabel("tasks per second")
    ax.set_title(f"Node throughput, {tp['tasks']} tasks submitted at once (2 cores)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def _cpu_child(kind: str, n: int, out: str) -> int:
    """One node on whatever ``fades`` is first on the path: n tasks of ``kind``; writes the
    CPU ms per task of the node process and of its workers."""
    name, mem = {"python": ("bench_mean", 64), "core": ("mean_core", 16)}[kind]
    with session(True) as (b, _), tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        make_node(b, home, 100)
        with Node(home, capacity=2) as node:
            for art in (b.runtime, b.py_mean, b.core_mean):
                node.functions.add(art.to_bytes())
            orc = node.orchestrator
            for tid in [orc.submit(task(name, mem)) for _ in range(10)]:
                orc.wait(tid, timeout=120)
            workers = orc.sandboxes.worker_pids()
            c0 = [cpu_s([os.getpid()]), cpu_s(workers)]
            t0 = time.perf_counter()
            recs = [
                orc.wait(t, timeout=300) for t in [orc.submit(task(name, mem)) for _ in range(n)]
            ]
            wall = time.perf_counter() - t0
            node_ms = (cpu_s([os.getpid()]) - c0[0]) / n * 1e3
            work_ms = (cpu_s(workers) - c0[1]) / n * 1e3
    res = {"node_ms": node_ms, "workers_ms": work_ms, "total_ms": node_ms + work_ms,
           "tasks_per_s": n / wall, "done": sum(r.status == "done" for r in recs)}  # fmt: skip
    Path(out).write_text(json.dumps(res))
    return 0


def cpu_split(src: str, rounds: int, quick: bool) -> dict[str, Any]:
    """Old (``src``) and new code alternating: CPU ms per task, node process and workers."""
    sizes = {"core": 300 if quick else 1000, "python": 100 if quick else 300}
    out: dict[str, Any] = {"src": src, "tasks": sizes, "rounds": rounds}
    for kind, n in sizes.items():
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for r in range(rounds):
            for label, path in (("before", src), ("after", str(Path(__file__).parents[1] / "src"))):
                with tempfile.NamedTemporaryFile(suffix=".json") as f:
                    env = {**os.environ, "PYTHONPATH": path}
                    cmd = [sys.executable, __file__, "--cpu-child", f"{kind},{n},{f.name}"]
                    subprocess.run(cmd, env=env, check=True, timeout=1800)
                    runs[label].append(json.loads(Path(f.name).read_text()))
                got = runs[label][-1]
                log(f"   {kind} round {r + 1} {label}: node {got['node_ms']:.2f} + workers "
                    f"{got['workers_ms']:.2f} = {got['total_ms']:.2f} ms CPU per task")  # fmt: skip
        out[kind] = {
            label: {k: statistics.median(x[k] for x in xs) for k in xs[0]} | {"runs": xs}
            for label, xs in runs.items()
        }
    return out


def _sizes(q: bool) -> tuple[int, int, int]:
    return (200 if q else 500, 100, 30 if q else 100)


def _before(src: str, quick: bool) -> dict[str, Any]:
    """The same section in a child process on the code in ``src``."""
    log(f"-- before: {src}")
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        env = {**os.environ, "PYTHONPATH": src}
        cmd = [sys.executable, __file__, "--child", f.name] + (["--quick"] if quick else [])
        subprocess.run(cmd, env=env, check=True, timeout=3600)
        got: dict[str, Any] = json.loads(Path(f.name).read_text())
    log("-- after: this tree")
    return {**got["res"], "src": src, "meta": got["meta"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sizes")
    ap.add_argument("--before", help="also run on this source tree, first, in the same run")
    ap.add_argument("--cpu-rounds", type=int, help="CPU split, old and new alternating")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cpu-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    q = bool(args.quick)
    if args.cpu_child:
        kind, n, out = args.cpu_child.split(",", 2)
        return _cpu_child(kind, int(n), out)
    if args.cpu_rounds:
        if not args.before:
            ap.error("--cpu-rounds needs --before SRC")
        with session(q) as (_, meta):
            res = cpu_split(str(Path(args.before).resolve()), args.cpu_rounds, q)
        log(f"wrote {write_json(RESULTS / 'single_node_cpu_split.json', {'meta': meta, **res})}")
        return 0
    if args.child:
        with session(q) as (b, meta):
            res = bench_throughput(b, *_sizes(q))
        Path(args.child).write_text(json.dumps({"meta": meta, "res": res}))
        return 0
    before = _before(str(Path(args.before).resolve()), q) if args.before else None
    with session(q) as (b, meta):
        res = bench_throughput(b, *_sizes(q))
    if before is not None:
        res["before"] = before
        res["before_vs_after"] = {
            f"{k}_{m}": [before[k][m], res[k][m]]
            for k in ("python", "core")
            for m in ("tasks_per_s", "ratio_vs_native_2_process", "cpu_ms_per_task")
        }
        log(f"   before -> after: {json.dumps(res['before_vs_after'])}")
    out = write_result("throughput", res, meta)
    plot_throughput(res, RESULTS / "single_node_throughput.png", before)
    mean_json = RESULTS / "single_node_mean_1m.json"
    if mean_json.exists():  # written by bench_mean.py, which run_all.py runs first
        mean = json.loads(mean_json.read_text())["mean_1m"]
        plot_breakdown(res, mean, RESULTS / "single_node_breakdown.png")
    else:
        log(f"no {mean_json.name}: run bench_mean.py for the breakdown figure")
    log(f"wrote {out} in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
