"""Benchmarks of a local cluster: latency through the fabric, and throughput with 3 nodes.

Run ``python benchmarks/bench_cluster.py [--quick]``. Writes ``benchmarks/results/cluster.json``
and ``benchmarks/results/cluster.png``. Every part is a real process (nats-server, controller,
node agents); the client drives the controller's HTTP API over a loopback socket.

1. Task latency (submit over HTTP -> controller -> JetStream -> node -> result stream ->
   controller -> HTTP answer), p50 and p99, for a core-module mean and a Python min/max/mean
   over 100 readings. Baseline, same run: the same task run in-process on one node
   (``Node.orchestrator.run``) on a copy of the same node folder. For the core task, the
   cluster (submit then wait, and ``FadesClient.run``: one request), the old code's cluster
   (``--before``) and the in-process node take turns task by task, so all see the same load.
2. Throughput: the same batch of tasks (one per room, round-robin over six rooms) on a cluster
   of 3 nodes holding 2 rooms each, against 1 node holding all six rooms. Tasks are
   auto-placed by data locality; 8 client threads submit, then every result is awaited.
3. Where the core task's time goes: the core tasks above (``--trace N`` of them, default
   200, at least the latency count), the median of each hop (client POST, controller,
   fabric, node, sandbox, result, controller, client) and each process's CPU per task (see
   ``_trace_latency.py``).

With ``--before SRC`` (a source tree, e.g. an older checkout's ``src``) the controller and the
node agent of a second one-node cluster run from SRC, and the core task's latency and trace
are measured on it too, taking turns with the others (the client and the in-process
baseline are this tree's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
import numpy as np

from fades.cluster import LocalCluster
from fades.node import Node

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fades_from
from _trace_latency import Tracer, node_hops, phases_p50, table

RESULTS = Path(__file__).resolve().parent / "results"


class OldCluster(LocalCluster):
    """A LocalCluster whose controller and node agents run from the source tree ``src``."""

    src: str = ""

    def _spawn(
        self,
        label: str,
        args: list[str],
        *,
        cloud: bool = False,
        exe: list[str] | None = None,
        **kw: Any,
    ) -> Any:
        if exe is None and args[:1] in (["controller"], ["node"]):
            exe = fades_from(self.src)
        return super()._spawn(label, args, cloud=cloud, exe=exe, **kw)


def task(artifact: str, room: str, n: int = 100) -> dict[str, Any]:
    return {
        "credentials": {"tenant": "facilities"},
        "data": [
            {"name": "t", "select": {"location": room, "sensor_type": "temperature", "last": n}}
        ],
        "function": {"artifact": artifact, "memory_mib": 64 if artifact != "mean_core" else 16},
    }


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timing(parts: dict[str, list[float]]) -> dict[str, float]:
    return {k: pct(v, 50) * 1e3 for k, v in parts.items()}


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": pct(values, 50) * 1e3,
        "p99_ms": pct(values, 99) * 1e3,
        "mean_ms": statistics.fmean(values) * 1e3,
    }


def latency(
    cluster: LocalCluster,
    artifact: str,
    n: int,
    *,
    baseline: bool = True,
    one_request: bool = False,
) -> dict[str, Any]:
    """Cluster latency of ``artifact``, and (``baseline``) its in-process baseline;
    ``one_request``: each task sent with ``FadesClient.run`` (submit and wait in one request)."""
    client = cluster.client()
    room = cluster.rooms(cluster.names[0])[0]
    for _ in range(5):  # warm: runtime fetched, sandboxes compiled
        tid = client.submit(task(artifact, room))["task_id"]
        client.wait(tid, timeout=60)
    through: list[float] = []
    parts: dict[str, list[float]] = {}
    for _ in range(n):
        t0 = time.perf_counter()
        if one_request:
            rec = client.run(task(artifact, room), timeout=60)
        else:
            rec = client.wait(client.submit(task(artifact, room))["task_id"], timeout=60)
        through.append(time.perf_counter() - t0)
        if rec["status"] != "done":
            raise RuntimeError(f"task failed: {rec['error_kind']}: {rec['error']}")
        for k, v in (rec.get("timing") or {}).items():
            parts.setdefault(k, []).append(float(v))
    cluster_ms = [x * 1e3 for x in through]
    if not baseline:  # (the caller adds the baseline measured later in this run)
        return {"samples_cluster_ms": cluster_ms, "timing_p50_ms": timing(parts)}
    local_ms = [x * 1e3 for x in in_process(cluster, artifact, n)]
    return latency_from(cluster_ms, local_ms, timing(parts))


def interleaved(
    cluster: LocalCluster,
    ways: dict[str, tuple[LocalCluster, bool]],
    n: int,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    """The core task ``n`` times each way (cluster, one request or not), and in-process on a
    copy of ``cluster``'s node folder, taking turns task by task (the order rotates). Each
    way's trace (with ``samples_ms``), and ``in-process``: the baseline's samples (ms)."""
    room = cluster.rooms(cluster.names[0])[0]
    tracers = {}
    for label, (cl, one_request) in ways.items():
        tr = stack.enter_context(Tracer(cl, core_task(cl), one_request=one_request))
        tr.warm()
        tracers[label] = tr
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    shutil.copytree(
        cluster.node_home(cluster.names[0]),
        tmp / "node",
        ignore=shutil.ignore_patterns("tasks.db*"),
    )
    node = stack.enter_context(Node(tmp / "node"))
    for _ in range(5):
        node.orchestrator.run(task("mean_core", room), timeout=60)
    local: list[float] = []
    stamps: list[tuple[float, float, float]] = []
    phases: list[dict[str, float]] = []

    def in_proc() -> None:
        t0 = time.perf_counter()
        rec = node.orchestrator.run(task("mean_core", room), timeout=60)
        local.append((time.perf_counter() - t0) * 1e3)
        assert rec.status == "done", rec.error
        assert rec.accepted_at and rec.started_at and rec.finished_at
        stamps.append((rec.accepted_at, rec.started_at, rec.finished_at))
        phases.append(rec.timing)

    steps = [*(tr.one for tr in tracers.values()), in_proc]
    for i in range(n):
        for k in range(len(steps)):
            steps[(i + k) % len(steps)]()
    out: dict[str, Any] = {}
    for label, tr in tracers.items():
        out[label] = tr.result() | {"samples_ms": tr.samples_ms()}
    out["in-process"] = local
    out["in-process hops"] = {
        "tasks": len(local),
        "hops_p50_ms": node_hops(stamps),
        "phases_p50_ms": phases_p50(phases),
        "end_to_end_p50_ms": statistics.median(local),
    }
    return out


def in_process(cluster: LocalCluster, artifact: str, n: int) -> list[float]:
    """The baseline: the same task, in-process, on a copy of the same node folder."""
    room = cluster.rooms(cluster.names[0])[0]
    src = cluster.node_home(cluster.names[0])
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "node"
        shutil.copytree(src, home, ignore=shutil.ignore_patterns("tasks.db*"))
        local: list[float] = []
        with Node(home) as node:
            for _ in range(5):
                node.orchestrator.run(task(artifact, room), timeout=60)
            for _ in range(n):
                t0 = time.perf_counter()
                rec = node.orchestrator.run(task(artifact, room), timeout=60)
                local.append(time.perf_counter() - t0)
                assert rec.status == "done", rec.error
    return local


def throughput(home: Path, nodes: int, rooms_per_node: int, n_tasks: int) -> dict[str, Any]:
    with LocalCluster(
        home, nodes=nodes, rooms_per_node=rooms_per_node, days=0.1, sensors=False
    ) as cluster:
        client = cluster.client()
        rooms = [r for name in cluster.names for r in cluster.rooms(name)]
        for r in rooms:  # warm every node
            client.wait(client.submit(task("mean_core", r))["task_id"], timeout=60)
        batch = [task("mean_core", rooms[i % len(rooms)]) for i in range(n_tasks)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda t: client.submit(t)["task_id"], batch))
            t_submitted = time.perf_counter()
            recs = list(pool.map(lambda i: client.wait(i, timeout=300), ids))
        wall = time.perf_counter() - t0
        failed = [r for r in recs if r["status"] != "done"]
        per_node: dict[str, int] = {}
        for r in recs:
            per_node[r["node"]] = per_node.get(r["node"], 0) + 1
    return {
        "nodes": nodes,
        "tasks": n_tasks,
        "failed": len(failed),
        "wall_s": wall,
        "submit_s": t_submitted - t0,
        "tasks_per_s": n_tasks / wall,
        "per_node": per_node,
    }


def plot(res: dict[str, Any], path: Path) -> None:
    traces = res.get("trace") or {}
    fig, axes = plt.subplots(1, 3 if traces else 2, figsize=(17 if traces else 11, 4.5))
    ax = axes[0]
    kinds = ("mean_core", "minmaxmean", "mean_core_one_request", "mean_core_before")
    for kind, style in zip(kinds, ("-", "--", "-.", ":"), strict=True):
        lat = res["latency"].get(kind)
        if lat is None:
            continue
        for key, label in (("samples_local_ms", "in-process"), ("samples_cluster_ms", "cluster")):
            if kind.startswith("mean_core_") and key == "samples_local_ms":
                continue  # the same baseline as mean_core's
            xs = np.sort(np.asarray(lat[key]))
            ax.plot(xs, np.linspace(0, 1, len(xs)), style, label=f"{kind} {label}")
    ax.set_xscale("log")
    ax.set_xlabel("task latency (ms, log)")
    ax.set_ylabel("fraction of tasks")
    ax.set_title("latency: through controller + NATS vs in-process")
    ax.legend(fontsize=8)
    ax = axes[1]
    tp = res["throughput"]
    labels = [f"{t['nodes']} node(s)" for t in tp]
    ax.bar(labels, [t["tasks_per_s"] for t in tp], color=["#888", "#2a7"])
    for i, t in enumerate(tp):
        ax.text(i, t["tasks_per_s"], f"{t['tasks_per_s']:.0f}/s", ha="center", va="bottom")
    ax.set_ylabel("tasks per second (core mean, 100 readings)")
    ax.set_title(f"throughput, {res['machine']['cpus']} CPUs")
    if traces:
        ax = axes[2]
        hops = list(next(iter(traces.values()))["hops_p50_ms"])
        if res.get("trace_in_process"):  # the in-process node's own hops, same run
            traces = {**traces, "in-process node": res["trace_in_process"]}
        y = np.arange(len(hops))
        h = 0.8 / len(traces)
        for i, (label, tr) in enumerate(traces.items()):
            vals = [tr["hops_p50_ms"].get(k, 0.0) for k in hops]
            ax.barh(y + i * h, vals, h, label=f"{label} (end to end {tr['end_to_end_p50_ms']:.1f})")
        ax.set_yticks(y + h * (len(traces) - 1) / 2, [k.replace(" -> ", "\n-> ") for k in hops])
        ax.tick_params(axis="y", labelsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("median ms per hop (core task, one at a time)")
        ax.set_title("where a task's time goes")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def core_task(cluster: LocalCluster) -> Any:
    room = cluster.rooms(cluster.names[0])[0]
    return lambda: task("mean_core", room)


def say_latency(label: str, lat: dict[str, Any]) -> None:
    print(
        f"latency {label}: cluster p50 {lat['cluster']['p50_ms']:.2f} ms "
        f"p99 {lat['cluster']['p99_ms']:.2f} ms; in-process p50 "
        f"{lat['local_in_process']['p50_ms']:.2f} ms "
        f"p99 {lat['local_in_process']['p99_ms']:.2f} ms "
        f"({lat['ratio_p50']:.1f}x)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trace", type=int, default=200, help="core tasks traced hop by hop, each way")
    ap.add_argument("--before", help="also run a cluster whose controller and node use this src")
    ap.add_argument(
        "--latency-only", action="store_true", help="skip the throughput part (not written)"
    )
    args = ap.parse_args(argv)
    n_lat = 40 if args.quick else 200
    n_tp = 60 if args.quick else 300
    import os

    res: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "latency": {},
        "throughput": [],
        "trace": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with contextlib.ExitStack() as stack:
            cluster = stack.enter_context(
                LocalCluster(root / "lat", nodes=1, days=0.1, sensors=False)
            )
            old_cluster = None
            if args.before:
                OldCluster.src = str(Path(args.before).resolve())
                res["before_source"] = OldCluster.src
                old_cluster = stack.enter_context(
                    OldCluster(root / "old", nodes=1, days=0.1, sensors=False)
                )
            res["latency"]["minmaxmean"] = latency(cluster, "minmaxmean", n_lat)
            say_latency("minmaxmean", res["latency"]["minmaxmean"])
            # the core task: every way takes turns, task by task (the same machine load)
            ways = {"now": (cluster, False), "now, one request": (cluster, True)}
            if old_cluster is not None:
                ways["before"] = (old_cluster, False)
            n_core = max(n_lat, args.trace)
            samples = interleaved(cluster, ways, n_core, stack)
            base = samples.pop("in-process")
            res["trace_in_process"] = own = samples.pop("in-process hops")
            print(
                "in-process: "
                + ", ".join(f"{k} {v:.3f}" for k, v in own["hops_p50_ms"].items())
                + "; inside the run: "
                + ", ".join(f"{k} {v:.3f}" for k, v in own["phases_p50_ms"].items()),
                flush=True,
            )
            for label, tr in samples.items():
                res["trace"][label] = tr
                print(table(label, tr), flush=True)
            keys = {"now": "mean_core", "now, one request": "mean_core_one_request"}
            keys["before"] = "mean_core_before"
            for label, tr in samples.items():
                lat = latency_from(tr.pop("samples_ms"), base, {})
                res["latency"][keys[label]] = lat
                say_latency(f"mean_core, {label}", lat)
        if args.latency_only:
            print("(latency only: nothing written)")
            return 0
        for nodes, rooms in ((1, 6), (3, 2)):
            tp = throughput(root / f"tp{nodes}", nodes, rooms, n_tp)
            res["throughput"].append(tp)
            print(
                f"throughput {nodes} node(s): {tp['tasks_per_s']:.0f} tasks/s "
                f"({tp['failed']} failed, per node {tp['per_node']})",
                flush=True,
            )
    one, three = res["throughput"]
    res["throughput_ratio_3_vs_1"] = three["tasks_per_s"] / one["tasks_per_s"]
    print(f"3 nodes vs 1: {res['throughput_ratio_3_vs_1']:.2f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps(res, indent=2))
    plot(res, RESULTS / "cluster.png")
    print(f"wrote {RESULTS / 'cluster.json'} and cluster.png")
    return 0


def latency_from(
    cluster_ms: list[float], local_ms: list[float], timing: dict[str, float]
) -> dict[str, Any]:
    """A latency entry from samples already taken (ms)."""
    out: dict[str, Any] = {
        "cluster": summary([x / 1e3 for x in cluster_ms]),
        "local_in_process": summary([x / 1e3 for x in local_ms]),
        "timing_p50_ms": timing,
        "samples_cluster_ms": cluster_ms,
        "samples_local_ms": local_ms,
    }
    out["ratio_p50"] = out["cluster"]["p50_ms"] / out["local_in_process"]["p50_ms"]
    out["overhead_p50_ms"] = out["cluster"]["p50_ms"] - out["local_in_process"]["p50_ms"]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
