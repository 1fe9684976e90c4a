"""Controller cost per task, and cluster throughput against the node's own orchestrator.

Run ``python benchmarks/bench_controller.py [--quick]``. Writes
``benchmarks/results/controller.json`` and ``controller.png``.

A real local cluster (nats-server, ``fades controller start``, one ``fades node start``, each
its own process). The same N tasks (a core-module mean over 100 readings, round-robin over
the node's rooms) go through the controller's HTTP API in two ways, in the same run:

1. **one by one** (the baseline): 8 client threads, each ``POST /v1/tasks`` then a long-poll
   ``GET /v1/tasks/{id}?wait=`` per task;
2. **batch + stream**: ``POST /v1/tasks/batch`` (``FadesClient.submit_many``) and one
   ``GET /v1/results/stream`` (``FadesClient.results``) for every outcome.

With ``--before SRC`` (a source tree, e.g. ``/work/main/src``) the same two ways run again, in
a cluster of their own whose controller AND node agent are started from ``SRC`` (the code
before), so the old controller and node agent are measured in the same run too. With
``--rounds R`` the whole comparison runs R times, the old and new clusters in alternating
order (the machine's load drifts), and each figure is the median over the rounds (every
round's figures are in the JSON under ``runs``).

``FADES_BENCH_PROFILE_NODE=FILE`` runs this run's node agent under yappi (CPU clock, every
thread) and saves its profile to FILE (``python -m pstats FILE``); its CPU figures are then
inflated by the profiler.

For each: the controller process's CPU time (user + system, from ``/proc``) over the run,
divided by N; the node agent's and nats-server's likewise; and tasks per second. Baseline for
throughput: the same node folder (copied) running the same N tasks in-process
(``Node.orchestrator.submit`` then ``wait``), in the same run, before and after the cluster
runs (the mean of the two; both are in the JSON). Its CPU per task is the floor under the
node agent's.
Targets: controller CPU <= 1 ms per task; cluster / in-process throughput >= 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from _common import fades_from
from fades.cluster import LocalCluster
from fades.node import Node

RESULTS = Path(os.environ.get("FADES_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
TICK = os.sysconf("SC_CLK_TCK")
#: a file name: run the node agent under yappi and save its profile there (pstats format)
PROFILE_NODE = os.environ.get("FADES_BENCH_PROFILE_NODE")


class Cluster(LocalCluster):
    """A LocalCluster whose node agents run under the profiler when PROFILE_NODE is set,
    or from the source tree ``node_src`` when that is set."""

    node_src: str | None = None

    def _spawn(
        self,
        label: str,
        args: list[str],
        *,
        cloud: bool = False,
        exe: list[str] | None = None,
        **kw: Any,
    ) -> Any:
        if PROFILE_NODE and exe is None and args[:2] == ["node", "start"]:
            helper = Path(__file__).resolve().parent / "_profile_node.py"
            exe = [sys.executable, str(helper), PROFILE_NODE]
        elif self.node_src and exe is None and args[:2] == ["node", "start"]:
            exe = fades_from(self.node_src)
        return super()._spawn(label, args, cloud=cloud, exe=exe, **kw)


def task(room: str, n: int = 100) -> dict[str, Any]:
    return {
        "credentials": {"tenant": "facilities"},
        "data": [
            {"name": "t", "select": {"location": room, "sensor_type": "temperature", "last": n}}
        ],
        "function": {"artifact": "mean_core", "memory_mib": 16},
    }


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def nats_pid(cluster: LocalCluster) -> int | None:
    proc = getattr(cluster.nats, "proc", None) or getattr(cluster.nats, "_proc", None)
    return getattr(proc, "pid", None)


class Meter:
    """CPU seconds of the cluster's processes between start() and stop()."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.pids = {"controller": cluster.procs["controller1"].pid}
        for name in cluster.names:
            self.pids[name] = cluster.procs[name].pid
        npid = nats_pid(cluster) or getattr(cluster.procs.get("nats"), "pid", None)
        if npid is not None:
            self.pids["nats"] = npid
        self.t0: dict[str, float] = {}

    def start(self) -> None:
        self.t0 = {k: cpu_s(p) for k, p in self.pids.items()}
        self.wall0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        out = {k: cpu_s(p) - self.t0[k] for k, p in self.pids.items()}
        out["wall"] = time.perf_counter() - self.wall0
        return out


def one_by_one(client: Any, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda t: client.submit(t)["task_id"], batch))
        return list(pool.map(lambda i: client.wait(i, timeout=300), ids))


def batch_stream(client: Any, batch: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    ids: list[str] = []
    for i in range(0, len(batch), size):
        for r in client.submit_many(batch[i : i + size]):
            if not r.get("accepted"):
                raise RuntimeError(f"refused: {r}")
            ids.append(r["task_id"])
    want = set(ids)
    got: list[dict[str, Any]] = []
    for out in client.results(task_ids=ids, timeout=300):
        if out["task_id"] in want:
            want.discard(out["task_id"])
            got.append(out)
            if not want:
                break
    return got


def in_process(home: Path, rooms: list[str], n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "node"
        shutil.copytree(home, copy, ignore=shutil.ignore_patterns("tasks.db*"))
        with Node(copy) as node:
            for r in rooms:
                node.orchestrator.run(task(r), timeout=60)
            t0, c0 = time.perf_counter(), time.process_time()
            ids = [node.orchestrator.submit(task(rooms[i % len(rooms)])) for i in range(n)]
            recs = [node.orchestrator.wait(i, timeout=300) for i in ids]
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    failed = sum(1 for r in recs if r.status != "done")
    # this process's CPU (every thread; the sandbox worker processes are not counted, as for
    # the node agent): the floor under the agent's CPU per task
    return {
        "tasks": n,
        "failed": failed,
        "wall_s": wall,
        "tasks_per_s": n / wall,
        "cpu_ms_per_task": cpu / n * 1e3,
    }


def run_mode(
    cluster: LocalCluster, mode: str, rooms: list[str], n: int, size: int
) -> dict[str, Any]:
    client = cluster.client()
    batch = [task(rooms[i % len(rooms)]) for i in range(n)]
    meter = Meter(cluster)
    meter.start()
    recs = one_by_one(client, batch) if mode == "one_by_one" else batch_stream(client, batch, size)
    cpu = meter.stop()
    client.close()
    failed = [r for r in recs if r.get("status") != "done"]
    res = {
        "tasks": n,
        "failed": len(failed),
        "wall_s": cpu["wall"],
        "tasks_per_s": n / cpu["wall"],
        "cpu_ms_per_task": {k: v / n * 1e3 for k, v in cpu.items() if k != "wall"},
    }
    if failed:
        res["first_failure"] = {k: failed[0].get(k) for k in ("status", "error_kind", "error")}
    return res


LABELS = {
    "before_one_by_one": "before: one by one",
    "before_batch_stream": "before: batch + stream",
}


def plot(res: dict[str, Any], path: Path) -> None:
    order = ("before_one_by_one", "before_batch_stream", "one_by_one", "batch_stream")
    modes = [m for m in order if m in res["modes"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    parts = ["controller"]
    for m in modes:
        parts += [k for k in res["modes"][m]["cpu_ms_per_task"] if k not in parts]
    width = 0.8 / len(modes)
    for j, m in enumerate(modes):
        cpu = res["modes"][m]["cpu_ms_per_task"]
        xs = [i + j * width for i in range(len(parts))]
        label = LABELS.get(m, m.replace("_", " "))
        ax.bar(xs, [cpu.get(p, 0.0) for p in parts], width, label=label)
        for x, p in zip(xs, parts, strict=True):
            v = cpu.get(p)
            text = "n/m" if v is None else f"{v:.2f}"  # not measured in that run
            ax.text(x, v or 0.0, text, ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="red", ls=":", lw=1, label="target: controller 1 ms")
    floor = res["in_process"].get("cpu_ms_per_task")
    if floor is not None:
        ax.axhline(floor, color="#555", ls="--", lw=1, label=f"in-process node {floor:.2f} ms")
    ax.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(parts))], parts)
    ax.set_ylabel("CPU ms per task")
    ax.set_title("CPU per task, by process (same run)")
    ax.legend(fontsize=8)
    ax = axes[1]
    labels = ["in-process", *[LABELS.get(m, m.replace("_", " ")) for m in modes]]
    vals = [res["in_process"]["tasks_per_s"], *[res["modes"][m]["tasks_per_s"] for m in modes]]
    colors = {
        "before_one_by_one": "#a55",
        "before_batch_stream": "#d99",
        "one_by_one": "#c84",
        "batch_stream": "#2a7",
    }
    ax.bar(labels, vals, color=["#888", *[colors[m] for m in modes]])
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.0f}/s ({v / vals[0]:.2f})", ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.set_ylabel("tasks per second (core mean, 100 readings)")
    ax.set_title(f"throughput, 1 node, {res['machine']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def one_cluster(
    where: Path, src: str | None, n: int, batch: int, with_baseline: bool
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The modes through one cluster (its controller and node agent from ``src``, or this
    tree), and (``with_baseline``) the in-process baseline on the same node folder, measured
    before and after the cluster runs (the machine's load drifts)."""

    def wrap(cmd: list[str]) -> list[str]:
        return ["env", f"PYTHONPATH={src}", *cmd] if "controller" in cmd else cmd

    Cluster.node_src = src  # the node agent from SRC too (None: this tree)
    modes: dict[str, dict[str, Any]] = {}
    base: list[dict[str, Any]] = []
    with Cluster(
        where, nodes=1, rooms_per_node=6, days=0.1, sensors=False, wrap=wrap if src else None
    ) as cl:
        rooms = cl.rooms(cl.names[0])
        client = cl.client()
        for r in rooms:  # warm: artifact fetched, sandbox compiled
            client.wait(client.submit(task(r))["task_id"], timeout=120)
        names = ["one_by_one", *(["batch_stream"] if hasattr(client, "submit_many") else [])]
        client.close()
        node_home = cl.node_home(cl.names[0])
        if with_baseline:
            base.append(in_process(node_home, rooms, n))
        for m in names:
            run_mode(cl, m, rooms, max(10, n // 10), batch)  # warm this path
            r = modes[m] = run_mode(cl, m, rooms, n, batch)
            print(
                f"{'before, ' if src else ''}{m}: {r['tasks_per_s']:.0f} tasks/s, CPU ms/task "
                + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_task"].items())
                + f" ({r['failed']} failed)",
                flush=True,
            )
        if with_baseline:
            base.append(in_process(node_home, rooms, n))
    return modes, base


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over ``runs`` (the runs kept under ``runs``)."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for key in ("wall_s", "tasks_per_s", "failed"):
        out[key] = statistics.median(r[key] for r in runs)
    out["cpu_ms_per_task"] = {
        k: statistics.median(r["cpu_ms_per_task"].get(k, 0.0) for r in runs)
        for k in runs[0]["cpu_ms_per_task"]
    }
    out["runs"] = runs
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", type=int, default=0, help="tasks per mode (default 400, quick 100)")
    ap.add_argument("--batch", type=int, default=100, help="tasks per batch request")
    ap.add_argument("--out", default="controller", help="result file stem")
    ap.add_argument("--before", help="also run a controller from this source tree (one by one)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat everything this often, the old and new clusters in alternating order; "
        "each figure is the median over the rounds",
    )
    args = ap.parse_args(argv)
    n = args.tasks or (100 if args.quick else 400)
    res: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_start": os.getloadavg(),
        },
        "rounds": args.rounds,
        "modes": {},
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    base: list[dict[str, Any]] = []
    src = str(Path(args.before).resolve()) if args.before else None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(max(1, args.rounds)):
            order: list[str | None] = [None] if src is None else [None, src]
            if i % 2:
                order.reverse()  # the machine's load drifts: alternate which goes first
            for which in order:
                where = Path(tmp) / f"{'b' if which else 'c'}{i}"
                modes, b = one_cluster(where, which, n, args.batch, which is None)
                base += b
                for m, r in modes.items():
                    if which is not None:
                        r["source"] = which
                    runs.setdefault(f"before_{m}" if which else m, []).append(r)
    order_names = ("one_by_one", "batch_stream", "before_one_by_one", "before_batch_stream")
    for m in sorted(runs, key=lambda k: order_names.index(k) if k in order_names else 9):
        res["modes"][m] = median_run(runs[m])
    res["in_process"] = {
        "tasks": n,
        "tasks_per_s": sum(b["tasks_per_s"] for b in base) / len(base),
        "cpu_ms_per_task": sum(b["cpu_ms_per_task"] for b in base) / len(base),
        "runs": base,
    }
    ip = res["in_process"]["tasks_per_s"]
    print(
        f"in-process: {ip:.0f} tasks/s, CPU {res['in_process']['cpu_ms_per_task']:.2f} ms/task",
        flush=True,
    )
    for m, r in res["modes"].items():
        r["throughput_vs_in_process"] = r["tasks_per_s"] / ip
        # when the machine's CPU is what bounds both (a shared 2-core box): the in-process
        # node's CPU per task over the cluster's (controller + node agent + nats-server; the
        # HTTP client not counted), a ratio the machine's load hardly moves
        r["cpu_bound_vs_in_process"] = res["in_process"]["cpu_ms_per_task"] / sum(
            r["cpu_ms_per_task"].values()
        )
        print(
            f"{m}: cluster / in-process throughput {r['throughput_vs_in_process']:.2f} "
            f"(CPU-bound: {r['cpu_bound_vs_in_process']:.2f})"
        )
    res["machine"]["load_avg_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2) + "\n")
    plot(res, RESULTS / f"{args.out}.png")
    print(f"wrote {RESULTS / (args.out + '.json')} and {args.out}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
