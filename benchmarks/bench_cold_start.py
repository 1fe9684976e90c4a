"""Single-node benchmark 1: cold start of a function.

A Python function (runtime cached in memory, and deserialised from the disk cache after
``engine.forget_compiled()``) and a core module: instantiation alone (the session's
``start_s``) and the whole tiny invocation. Baseline: ``python -c pass``.
Targets: Python p50 <= 5 ms, core p50 <= 0.1 ms.

Run ``python benchmarks/bench_cold_start.py [--quick]`` (``make bench`` runs it through
``run_all.py``). Writes ``benchmarks/results/single_node_cold_start.json`` and its PNG.
About a minute; ``--quick`` a few seconds.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import (
    RESULTS,
    Bench,
    dataset,
    log,
    parse_args,
    session,
    summary,
    verdict,
    write_result,
)
from fades.functions.artifact import Artifact
from fades.sandbox import engine
from fades.sandbox.base import Limits
from fades.sandbox.wire import encode


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


def main(argv: list[str] | None = None) -> int:
    q = parse_args(__doc__ or "", argv)
    with session(q) as (b, meta):
        res = bench_cold_start(
            b, reps=40 if q else 200, disk_reps=5 if q else 20, proc_reps=5 if q else 20
        )
    out = write_result("cold_start", res, meta)
    plot_cold_start(res, RESULTS / "single_node_cold_start.png")
    log(f"wrote {out} in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
