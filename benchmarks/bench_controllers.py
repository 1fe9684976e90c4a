"""Several controllers: tasks per second and controller CPU per task, with 1 and 2 controllers.

Run ``python benchmarks/bench_controllers.py [--quick]``. Writes
``benchmarks/results/controllers.json`` and ``controllers.png``.

Three real local clusters in the same run (nats-server, ``fades controller start`` processes,
one ``fades node start``), each given the same N tasks (a core-module mean over 100 readings,
round-robin over the node's rooms), one by one: 8 client threads, each ``POST /v1/tasks``
then a long-poll ``GET /v1/tasks/{id}?wait=``:

1. **1 controller, no log** (the baseline: ``FADES_CTL_LOG=off``, writes go straight to
   ``controller.db``, as before the controller log existed);
2. **1 controller, log** (``FADES_CTL_LOG=on``: every write is a record in the replicated
   stream ``FADES_CTL_LOG`` and comes back through the controller's own reader);
3. **2 controllers, log**: the client threads alternate between the two controllers' URLs.

For each: tasks per second, and the CPU time (user + system, from ``/proc``) of every
controller process (summed), of the node agent and of nats-server over the run, divided by
N. Ratios are against configuration 1 in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_controller import cpu_s, nats_pid, task
from fades.client import FadesClient
from fades.cluster import LocalCluster

RESULTS = Path(os.environ.get("FADES_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
THREADS = 8

CONFIGS: dict[str, tuple[int, str]] = {
    "1 controller, no log": (1, "off"),
    "1 controller, log": (1, "on"),
    "2 controllers, log": (2, "on"),
}


def pids(cl: LocalCluster) -> dict[str, list[int]]:
    out = {
        "controllers": [cl.procs[f"controller{i}"].pid for i in range(1, cl.n_controllers + 1)],
        "node": [cl.procs[n].pid for n in cl.names],
    }
    npid = nats_pid(cl) or getattr(cl.procs.get("nats"), "pid", None)
    if npid is not None:
        out["nats"] = [npid]
    return out


def cpu(ps: dict[str, list[int]]) -> dict[str, float]:
    return {k: sum(cpu_s(p) for p in v) for k, v in ps.items()}


def drive(cl: LocalCluster, rooms: list[str], n: int) -> dict[str, Any]:
    clients = [FadesClient(cl.urls[i % len(cl.urls)], cl.token) for i in range(THREADS)]

    def one(i: int) -> dict[str, Any]:
        c = clients[i % THREADS]
        tid = c.submit(task(rooms[i % len(rooms)]))["task_id"]
        return c.wait(tid, timeout=300)

    ps = pids(cl)
    c0 = cpu(ps)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        recs = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    c1 = cpu(ps)
    for c in clients:
        c.close()
    failed = [r for r in recs if r.get("status") != "done"]
    return {
        "tasks": n,
        "failed": len(failed),
        "wall_s": wall,
        "tasks_per_s": n / wall,
        "cpu_ms_per_task": {k: (c1[k] - c0[k]) / n * 1e3 for k in c0},
    }


def run_config(tmp: Path, label: str, n: int) -> dict[str, Any]:
    count, flag = CONFIGS[label]
    old = os.environ.get("FADES_CTL_LOG")
    os.environ["FADES_CTL_LOG"] = flag
    try:
        with LocalCluster(
            tmp / f"c{count}{flag}",
            nodes=1,
            rooms_per_node=6,
            days=0.1,
            sensors=False,
            controllers=count,
        ) as cl:
            rooms = cl.rooms(cl.names[0])
            with cl.client() as c:
                for r in rooms:  # warm: artifact fetched, sandbox compiled
                    c.wait(c.submit(task(r))["task_id"], timeout=120)
            drive(cl, rooms, max(16, n // 5))  # warm the HTTP and log paths
            return drive(cl, rooms, n)
    finally:
        if old is None:
            os.environ.pop("FADES_CTL_LOG", None)
        else:
            os.environ["FADES_CTL_LOG"] = old


def plot(res: dict[str, Any], path: Path) -> None:
    labels = list(res["configs"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    parts = ["controllers", "nats", "node"]
    width = 0.8 / len(labels)
    for j, lab in enumerate(labels):
        c = res["configs"][lab]["cpu_ms_per_task"]
        xs = [i + j * width for i in range(len(parts))]
        ax.bar(xs, [c.get(p, 0.0) for p in parts], width, label=lab)
        for x, p in zip(xs, parts, strict=True):
            ax.text(x, c.get(p, 0.0), f"{c.get(p, 0.0):.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(parts))], parts)
    ax.set_ylabel("CPU ms per task (all controllers summed)")
    ax.set_title("CPU per task, by process (same run)")
    ax.legend(fontsize=8)
    ax = axes[1]
    vals = [res["configs"][lab]["tasks_per_s"] for lab in labels]
    ax.bar(labels, vals, color=["#888", "#c84", "#2a7"][: len(labels)])
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.0f}/s ({v / vals[0]:.2f})", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("tasks per second (one by one, 8 threads)")
    ax.set_title(f"throughput, 1 node, {res['machine']['cpus']} CPUs")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", type=int, default=0, help="tasks per run (default 400, quick 100)")
    ap.add_argument("--out", default="controllers", help="result file stem")
    args = ap.parse_args(argv)
    n = args.tasks or (100 if args.quick else 400)
    res: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_start": os.getloadavg(),
        },
        "configs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label in CONFIGS:
            r = res["configs"][label] = run_config(Path(tmp), label, n)
            print(
                f"{label}: {r['tasks_per_s']:.0f} tasks/s, CPU ms/task "
                + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_task"].items())
                + f" ({r['failed']} failed)",
                flush=True,
            )
    base = res["configs"]["1 controller, no log"]
    for label, r in res["configs"].items():
        r["tasks_per_s_vs_no_log"] = r["tasks_per_s"] / base["tasks_per_s"]
        r["controller_cpu_vs_no_log"] = (
            r["cpu_ms_per_task"]["controllers"] / base["cpu_ms_per_task"]["controllers"]
        )
        print(
            f"{label}: throughput x{r['tasks_per_s_vs_no_log']:.2f}, "
            f"controller CPU x{r['controller_cpu_vs_no_log']:.2f} (vs 1 controller, no log)"
        )
    res["machine"]["load_avg_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2) + "\n")
    plot(res, RESULTS / f"{args.out}.png")
    print(f"wrote {RESULTS / (args.out + '.json')} and {args.out}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
