"""Offline autonomy of an edge site: cut its uplink, keep working, drain on reconnect.

Run ``python benchmarks/bench_outage.py [--quick]``. Writes ``benchmarks/results/outage.json``
and ``benchmarks/results/outage.png``. Every part is a real process: the hub nats-server, a
site leaf nats-server reached through a TCP relay (the uplink, killed to cut it), the
controller and the node agent; simulated sensors publish to the site's MQTT port.

For each outage length (full: 15, 60 and 120 s; ``--quick``: 5 and 20 s):

1. Before the cut, tasks are handed to the node (1 s of work each, enough to keep one of its
   two workers busy for most of the outage); an automatic two-stage pipeline starts a run
   every second at the site (its queue lives in the site's JetStream) and 14 simulated
   sensors publish one reading each per 0.2 s, all along.
2. The uplink is cut for the outage. Measured: readings ingested at the site during the
   outage against those the sensors published (by timestamp window; the exact count of lost
   readings is over the whole run, sensors stopped first), results the site stored for the
   hub during the outage (its ``FADES_UP`` stream).
3. The uplink is restored. Measured: the drain time (restore -> the last outcome stored by
   the controller), outcomes lost, duplicates seen by the controller's results consumer
   before its de-duplication (``fades_results_duplicate_total``), and the latency of a live
   task submitted right after the restore while the backlog drains. The site's stream is
   FIFO, so the live result travels *alongside* (behind) the backlog: its extra latency is
   bounded by the drain time. Baseline (same run): the same live task with the link up.

What the site stored for the hub goes up through the node agent's forwarder
(:mod:`fades.fabric.forward`), which tries again within a second of the link's return. Azure IoT
Edge's published drain times (3.4 / 13.9 / 1.0 / 53.3 s after 0 / 15 / 60 / 120 s outages) are
in the JSON and the plot for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import httpx
import matplotlib.pyplot as plt

from fades.cluster import LocalCluster
from fades.functions.build import build_python

RESULTS = Path(os.environ.get("FADES_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
#: Azure IoT Edge: drain time (s) after an outage of N seconds (issue 12)
IOT_EDGE = {0: 3.4, 15: 13.9, 60: 1.0, 120: 53.3}
SITE = "edge1"
WORK_S = 1.0
#: pipelines at a site (the sitepipes work) are part of this tree
PIPELINES = importlib.util.find_spec("fades.pipelines.sites") is not None

SLOW = """
import time

def main(data, params):
    t0 = time.monotonic()
    while time.monotonic() - t0 < params.get("seconds", 1.0):
        pass
    return {"rows": len(data["t"])}
"""


#: the automatic pipeline that runs at the site all along (two stages, one run a second)
PIPE_FUNCS = {
    "site_a": "def main(data, params):\n    return {'v': 1, 'run': data['_pipeline']['run']}\n",
    "site_b": "def main(data, params):\n    return {'v': data['a']['v'] + 1}\n",
}
PIPELINE = "site-watch"


def pipe_spec() -> dict[str, Any]:
    return {
        "name": PIPELINE,
        "credentials": {"tenant": "facilities"},
        "run": {"mode": "automatic", "every_s": 1, "run_deadline_s": 900},
        "queue": {"max_runs": 1000, "when_full": "refuse"},
        "stages": [
            {"name": "a", "function": {"artifact": "site_a", "memory_mib": 32}, "node": SITE},
            {"name": "b", "function": {"artifact": "site_b", "memory_mib": 32}, "after": ["a"],
             "node": SITE},
        ],
    }  # fmt: skip


def pipeline_runs(cluster: LocalCluster) -> list[dict[str, Any]]:
    return list(cluster.client().pipeline_runs(PIPELINE, 5000))


def task(artifact: str, room: str, **params: Any) -> dict[str, Any]:
    return {
        "credentials": {"tenant": "facilities"},
        "data": [
            {"name": "t", "select": {"location": room, "sensor_type": "temperature", "last": 50}}
        ],
        "function": {"artifact": artifact, "time_budget_ms": 60000, "params": params},
    }


def log(msg: str) -> None:
    print(f"[outage {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def duplicates(cluster: LocalCluster) -> float:
    text = httpx.get(f"{cluster.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("fades_results_duplicate_total")
    )


def site_stream_seq(cluster: LocalCluster) -> int:
    import nats

    async def probe() -> int:
        nc = await nats.connect(cluster.site(SITE).url)
        try:
            info = await nc.jetstream().stream_info("FADES_UP")
            return int(info.state.last_seq)
        finally:
            await nc.close()

    return asyncio.run(probe())


def readings_between(cluster: LocalCluster, t0: float, t1: float) -> int:
    with sqlite3.connect(cluster.node_home(SITE) / "readings.db") as con:
        q = "SELECT COUNT(*) FROM readings WHERE ts >= ? AND ts < ?"
        return int(con.execute(q, (t0, t1)).fetchone()[0])


def held(cluster: LocalCluster, ids: list[str]) -> list[tuple[str, int]]:
    marks = ",".join("?" * len(ids))
    with sqlite3.connect(cluster.node_home(SITE) / "tasks.db") as con:
        q = f"SELECT status, delivered FROM tasks WHERE id IN ({marks})"
        return [(r[0], r[1]) for r in con.execute(q, ids)]


def wait_until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def live_latency(cluster: LocalCluster, room: str) -> float:
    client = cluster.client()
    t0 = time.monotonic()
    rec = client.wait(client.submit(task("mean_core", room))["task_id"], 300)
    if rec["status"] != "done":
        raise RuntimeError(f"live task failed: {rec}")
    return time.monotonic() - t0


def pipeline_drain(
    cluster: LocalCluster, t_cut: float, t_back: float, t_restore: float
) -> dict[str, Any]:
    """The pipeline runs the site started during the outage, once all reached the controller:
    how many, how long after the restore the last one arrived, and how many did not."""
    during: set[str] = set()
    deadline = time.monotonic() + 300
    done: set[str] = set()
    last_new = time.monotonic()
    while time.monotonic() < deadline:
        runs = pipeline_runs(cluster)
        during = {r["run"] for r in runs if t_cut <= r["started_at"] < t_back}
        now_done = {r["run"] for r in runs if r["run"] in during and r["status"] == "done"}
        if now_done - done:
            last_new = time.monotonic()
        done = now_done
        if during and done >= during:
            break
        time.sleep(0.2)
    bad = [r for r in pipeline_runs(cluster) if r["run"] in during and r["status"] != "done"]
    return {
        "runs_started_at_site_during_outage": len(during),
        "runs_done_at_controller": len(done),
        "runs_lost_or_failed": len(during - done),
        "drain_s": round(last_new - t_restore, 3),
        "not_done": [(r["run"], r["status"], r["reason"]) for r in bad[:5]],
    }


def one_outage(
    cluster: LocalCluster, outage: float, room: str, with_pipeline: bool
) -> dict[str, Any]:
    client = cluster.client()
    n = max(4, int(outage * 0.7 / WORK_S))  # one worker busy for ~70% of the outage
    ids = [client.submit(task("slow", room, seconds=WORK_S))["task_id"] for _ in range(n)]
    wait_until(lambda: len(held(cluster, ids)) == n, 120, "node holds the tasks")
    dups0 = duplicates(cluster)
    sim = cluster.simulators[0]
    seq0, pub0 = site_stream_seq(cluster), sim.stats["published"]
    t_cut = time.time()
    cluster.cut_uplink(SITE)
    log(f"cut {outage:g} s with {n} tasks held by the node")
    time.sleep(outage)
    finished = sum(1 for s, d in held(cluster, ids) if d == 1)
    seq1, pub1 = site_stream_seq(cluster), sim.stats["published"]
    t_back = time.time()
    stored_during = seq1 - seq0  # task outcomes and pipeline stage events
    arrivals: dict[str, float] = {}
    watcher_err: list[BaseException] = []

    def watch() -> None:
        try:
            for out in cluster.client().results(ids, timeout=600):
                arrivals.setdefault(out["task_id"], time.monotonic())
        except BaseException as exc:
            watcher_err.append(exc)

    t_restore = time.monotonic()
    cluster.restore_uplink(SITE)
    th = threading.Thread(target=watch, daemon=True)
    th.start()
    live = live_latency(cluster, room)
    th.join(900)
    pipe = pipeline_drain(cluster, t_cut, t_back, t_restore) if with_pipeline else None
    time.sleep(1.0)  # readings in flight at the restore are written
    ingested = readings_between(cluster, t_cut, t_back)
    drain = max(arrivals.values()) - t_restore if arrivals else float("nan")
    res = {
        "outage_s": outage,
        "tasks": n,
        "messages_stored_at_site_during_outage": stored_during,  # outcomes + stage events
        "tasks_finished_during_outage": finished,
        "readings_published_during_outage": pub1 - pub0,
        "readings_ingested_during_outage": ingested,
        "readings_lost_by_window": max(0, (pub1 - pub0) - ingested),
        "drain_s": round(drain, 3),
        "outcomes_received": len(arrivals),
        "outcomes_lost": n - len(arrivals),
        "duplicates_at_controller": duplicates(cluster) - dups0,
        "live_task_latency_after_restore_s": round(live, 3),
        "watcher_error": repr(watcher_err[0]) if watcher_err else None,
        "pipeline": pipe,
    }
    log(json.dumps(res))
    return res


def readings_total(cluster: LocalCluster) -> dict[str, int]:
    """Every reading the sensors published over the whole run against those the site wrote
    (exact: the sensors are stopped first and the node's counters are read once settled).
    The per-outage counts are by timestamp window, off by a reading at the window edges."""
    sim = cluster.simulators.pop(0)
    sim.stop()
    published = int(sim.stats["published"])
    written = -1
    for _ in range(60):
        time.sleep(1.0)
        stats = next(n for n in cluster.client().nodes() if n["name"] == SITE)["stats"]
        now = int(stats.get("written", 0)) + int(stats.get("rejected", 0))
        if now == written and now >= published:
            break
        written = now
    return {"published": published, "written": written, "lost": max(0, published - written)}


def run_cluster(home: Path, outages: list[float], with_pipeline: bool) -> dict[str, Any]:
    cluster = LocalCluster(
        home,
        nodes=1,
        days=0.02,
        sensors=True,
        sensor_rate_s=0.2,
        heartbeat_s=0.5,
        down_after_s=3.0,
        capacity=2,
        sites=True,
        say=log,
    )
    cluster.prepare()
    cluster.start()
    try:
        src = home.parent / "slow.py"
        src.write_text(SLOW)
        assert cluster.key is not None
        cluster.client().upload(build_python(src, key=cluster.key).to_bytes())
        if with_pipeline:
            for name, code in PIPE_FUNCS.items():
                (home.parent / f"{name}.py").write_text(code)
                art = build_python(home.parent / f"{name}.py", key=cluster.key)
                cluster.client().upload(art.to_bytes())
            receipt = cluster.client().submit_pipeline(pipe_spec())
            log(f"pipeline {PIPELINE}: queue at {receipt.get('queue_at')}")
            wait_until(
                lambda: sum(r["status"] == "done" for r in pipeline_runs(cluster)) >= 2,
                120,
                "two pipeline runs done",
            )
        room = cluster.rooms(SITE)[0]
        live_latency(cluster, room)  # warm-up (artifacts fetched)
        cluster.client().wait(cluster.client().submit(task("slow", room, seconds=0.1))["task_id"])
        baseline = [live_latency(cluster, room) for _ in range(5)]
        runs = [one_outage(cluster, d, room, with_pipeline) for d in outages]
        return {
            "live_task_latency_link_up_s": baseline,
            "outages": runs,
            "readings": readings_total(cluster),
        }
    finally:
        cluster.stop()


def plot(out: dict[str, Any], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    withr = {r["outage_s"]: r for r in out["site"]["outages"]}
    lengths = sorted(set(withr) | set(IOT_EDGE))
    x = range(len(lengths))
    w = 0.2

    def bars(values: dict[float, float], off: float, label: str, color: str) -> None:
        xs = [i + off for i, d in enumerate(lengths) if d in values]
        ys = [values[d] for d in lengths if d in values]
        b = ax1.bar(xs, ys, w, label=label, color=color)
        ax1.bar_label(b, fmt="%.1f", fontsize=8)

    bars({d: r["drain_s"] for d, r in withr.items()}, -w, "fades tasks", "tab:green")
    piped = {d: r["pipeline"]["drain_s"] for d, r in withr.items() if r.get("pipeline")}
    if piped:
        bars(piped, 0.0, "fades pipeline runs", "tab:olive")
    bars({float(k): v for k, v in IOT_EDGE.items()}, w, "Azure IoT Edge (published)",
         "tab:gray")  # fmt: skip
    ax1.set_xticks(list(x), [f"{d:g} s" for d in lengths])
    ax1.set_xlabel("uplink outage")
    ax1.set_ylabel("drain time after reconnect (s)")
    ax1.set_title("Backlog drain after an outage (lost = 0, duplicated = 0)")
    ax1.legend(fontsize=8)
    base = statistics.median(out["site"]["live_task_latency_link_up_s"])
    labels, heights, colors = ["link up"], [base], ["tab:blue"]
    for d in sorted(withr):
        labels.append(f"after {d:g} s")
        heights.append(withr[d]["live_task_latency_after_restore_s"])
        colors.append("tab:green")
    b = ax2.bar(labels, heights, color=colors)
    ax2.bar_label(b, fmt="%.2f", fontsize=8)
    ax2.set_ylabel("live task latency (s): submit -> outcome")
    ax2.set_title("A live task submitted right after reconnect")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="outages of 5 and 20 s")
    args = ap.parse_args(argv)
    outages = [5.0, 20.0] if args.quick else [15.0, 60.0, 120.0]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="fades-outage-") as tmp:
        site = run_cluster(Path(tmp) / "a" / "cluster", outages, PIPELINES)
    out = {
        "meta": {
            "quick": args.quick,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
            "wall_s": round(time.time() - t0, 1),
            "reproduce": "python benchmarks/bench_outage.py" + (" --quick" if args.quick else ""),
        },
        "iot_edge_drain_s": IOT_EDGE,
        "site": site,
        "live_traffic": "alongside the backlog (the site stream is FIFO): bounded by the drain",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "outage.json").write_text(json.dumps(out, indent=2))
    plot(out, RESULTS / "outage.png")
    log(f"wrote {RESULTS / 'outage.json'} and outage.png")
    bad = [
        r
        for r in site["outages"]
        if r["outcomes_lost"]
        or r["duplicates_at_controller"]
        or (r["pipeline"] or {}).get("runs_lost_or_failed")
    ]
    bad += [c for c in (site,) if c["readings"]["lost"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
