"""The clustered hub: what three NATS servers with R3 streams cost, and how long a hub server's
death stalls the API.

Run ``python benchmarks/bench_hub.py [--quick]``. Writes ``benchmarks/results/hub.json`` and
``benchmarks/results/hub.png``. Every part is real: nats-server processes (``EmbeddedHub`` with
one server, and with three clustered), nats-py, and for the stall a whole ``LocalCluster``
(controller and one node agent as subprocesses) over the three-server hub.

1. Start: seconds until the hub is ready (JetStream meta leader elected, every server healthy).
2. Publish: JetStream publishes of 256-byte messages with a message id, one at a time (each
   acknowledged before the next; rate and p50/p99 latency) and 64 in flight (rate), and the
   servers' CPU seconds and resident memory. Baseline, same run: the one-server hub (R1).
   Both fsync every write (``sync_interval: always``, the embedded default).
3. Stall: tasks are submitted through the controller's HTTP API every 100 ms; the leader of
   the tasks stream is killed with SIGKILL. Reported: seconds from the kill to the next
   accepted task, and to the first completion of a task accepted after the kill. Baselines,
   same run: submit-to-done latency of the tasks submitted before the kill, and of tasks
   submitted one at a time on a one-server hub and on the three-server hub. The server is
   restarted and the time until it has caught up is reported too.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fades.bus.nats import NatsBus
from fades.cluster import LocalCluster
from fades.fabric.connect import FabricSettings, connect
from fades.fabric.hub import EmbeddedHub
from fades.fabric.subjects import TASKS_STREAM
from fades.functions.build import build_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import EXAMPLES, RESULTS, log, parse_args, pct, write_json

PAYLOAD = b"x" * 256
WINDOW = 64
#: seconds between two submits of the stall test's client
SUBMIT_EVERY_S = 0.1
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def _rss_mib(pids: list[int]) -> float:
    kib = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                kib += int(line.split()[1])
    return kib / 1024


async def _publish(hub: EmbeddedHub, n: int) -> dict[str, Any]:
    bus = await NatsBus.connect(FabricSettings(hub.url, replicas=hub.replicas), name="bench")
    pids = [s.proc.pid for s in hub.servers if s.proc is not None]
    try:
        await bus.stream("BENCH", ["bench.>"])
        for i in range(50):  # warm-up
            await bus.publish("bench.w", PAYLOAD, msg_id=f"w{i}")
        cpu0 = _cpu_s(pids)
        lat: list[float] = []
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            await bus.publish("bench.s", PAYLOAD, msg_id=f"s{i}")
            lat.append(time.perf_counter() - t)
        seq_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for start in range(0, n, WINDOW):
            await asyncio.gather(
                *(
                    bus.publish("bench.c", PAYLOAD, msg_id=f"c{i}")
                    for i in range(start, min(n, start + WINDOW))
                )
            )
        conc_s = time.perf_counter() - t0
        cpu = _cpu_s(pids) - cpu0
        info = await bus.nc.jetstream().stream_info("BENCH")
        assert info.state.messages == 2 * n + 50, info.state
        return {
            "servers": hub.n,
            "replicas": int(info.config.num_replicas or 1),
            "messages": n,
            "seq_rate_msg_s": n / seq_s,
            "seq_p50_ms": pct(lat, 50) * 1000,
            "seq_p99_ms": pct(lat, 99) * 1000,
            f"window{WINDOW}_rate_msg_s": n / conc_s,
            "server_cpu_s_per_1000": cpu / (2 * n) * 1000,
            "server_rss_mib": _rss_mib(pids),
        }
    finally:
        await bus.close()


def bench_publish(tmp: Path, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in (1, 3):
        t0 = time.perf_counter()
        hub = EmbeddedHub(tmp / f"pub{size}", n=size, mqtt=True).start()
        ready_s = time.perf_counter() - t0
        try:
            res = asyncio.run(_publish(hub, n))
        finally:
            hub.stop()
        res["ready_s"] = ready_s
        log(
            f"hub of {size}: ready {ready_s:.2f} s, {res['seq_rate_msg_s']:.0f} msg/s one at a "
            f"time (p50 {res['seq_p50_ms']:.2f} ms), {res[f'window{WINDOW}_rate_msg_s']:.0f} "
            f"msg/s with {WINDOW} in flight, {res['server_cpu_s_per_1000']:.3f} CPU s per 1000, "
            f"{res['server_rss_mib']:.0f} MiB"
        )
        out[f"R{res['replicas']}_{size}_server"] = res
    r1, r3 = out["R1_1_server"], out["R3_3_server"]
    out["ratios_R3_over_R1"] = {
        "seq_rate": r3["seq_rate_msg_s"] / r1["seq_rate_msg_s"],
        "seq_p50": r3["seq_p50_ms"] / r1["seq_p50_ms"],
        "window_rate": r3[f"window{WINDOW}_rate_msg_s"] / r1[f"window{WINDOW}_rate_msg_s"],
        "cpu_per_msg": r3["server_cpu_s_per_1000"] / r1["server_cpu_s_per_1000"],
        "rss": r3["server_rss_mib"] / r1["server_rss_mib"],
    }
    return out


def _task() -> dict[str, Any]:
    return {
        "credentials": {"tenant": "facilities"},
        "data": [{"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}}],
        "function": {"artifact": "mean_core", "time_budget_ms": 20000},
    }


def _leader(url: str) -> str:
    async def ask() -> str:
        nc = await connect(FabricSettings(url), name="probe")
        try:
            info = await nc.jetstream().stream_info(TASKS_STREAM)
            return str(info.cluster.leader)  # type: ignore[union-attr]
        finally:
            await nc.close()

    return asyncio.run(ask())


def _one_stall(cluster: LocalCluster) -> dict[str, Any]:
    client = cluster.client()
    accepted: list[tuple[float, float, str]] = []  # (monotonic, wall, task id)
    errors: list[float] = []
    halt = threading.Event()

    def submit() -> None:
        c = cluster.client()
        while not halt.is_set():
            try:
                tid = c.submit(_task())["task_id"]
                accepted.append((time.monotonic(), time.time(), tid))
            except Exception:
                errors.append(time.monotonic())
            halt.wait(SUBMIT_EVERY_S)

    th = threading.Thread(target=submit, daemon=True)
    th.start()
    while len(accepted) < 20:
        time.sleep(0.05)
    victim = cluster.hub.index(_leader(cluster.hub.url))
    t_kill, wall_kill = time.monotonic(), time.time()
    before = len(accepted)
    cluster.hub.kill(victim)
    while len(accepted) < before + 30:
        time.sleep(0.05)
    halt.set()
    th.join(30)
    normal: list[float] = []
    first_done_after = float("inf")
    for _, wall, tid in accepted:
        rec = client.wait(tid, timeout=120)
        assert rec["status"] == "done", rec
        if wall < wall_kill - 0.5:
            normal.append(float(rec["finished_at"]) - wall)
        elif wall > wall_kill:
            first_done_after = min(first_done_after, float(rec["finished_at"]))
    next_accept = next(t for t, _, _ in accepted if t > t_kill)
    t0 = time.perf_counter()
    cluster.hub.start_server(victim)
    return {
        "victim": cluster.hub.server(victim).name,
        "accepted": len(accepted),
        "lost": 0,  # every accepted task was waited for and is done (asserted above)
        "submit_errors": len(errors),
        "kill_to_next_accepted_s": next_accept - t_kill,
        "kill_to_next_completed_s": first_done_after - wall_kill,
        "normal_submit_to_done_p50_s": pct(normal, 50),
        "restart_to_caught_up_s": time.perf_counter() - t0,
    }


def _cluster(tmp: Path, hub: int) -> LocalCluster:
    cluster = LocalCluster(
        tmp / f"cluster{hub}",
        nodes=1,
        days=0.02,
        sensors=False,
        ingest=False,
        functions=False,
        heartbeat_s=0.5,
        down_after_s=10.0,
        hub=hub,
    )
    cluster.prepare()
    cluster.start()
    assert cluster.key is not None
    art = build_function(EXAMPLES / "mean_core.wat", key=cluster.key)
    cluster.client().upload(art.to_bytes())
    return cluster


def _task_latency(cluster: LocalCluster, k: int) -> dict[str, float]:
    """Submit-to-done seconds of ``k`` tasks, one at a time, through the HTTP API."""
    client = cluster.client()
    lat = []
    for _ in range(k):
        t = time.perf_counter()
        rec = client.wait(client.submit(_task())["task_id"], timeout=60)
        assert rec["status"] == "done", rec
        lat.append(time.perf_counter() - t)
    return {"p50_s": pct(lat, 50), "p90_s": pct(lat, 90), "tasks": k}


def bench_stall(tmp: Path, repeats: int, k: int) -> dict[str, Any]:
    one = _cluster(tmp, 1)
    try:
        base = _task_latency(one, k)
    finally:
        one.stop()
    cluster = _cluster(tmp, 3)
    try:
        r3 = _task_latency(cluster, k)
        log(
            f"task submit-to-done p50, one at a time: hub of 1 {base['p50_s'] * 1000:.0f} ms, "
            f"hub of 3 {r3['p50_s'] * 1000:.0f} ms"
        )
        runs = []
        for _ in range(repeats):
            r = _one_stall(cluster)
            log(
                f"killed {r['victim']} (tasks stream leader): next accepted after "
                f"{r['kill_to_next_accepted_s']:.3f} s, next completed after "
                f"{r['kill_to_next_completed_s']:.2f} s (before the kill, p50 "
                f"{r['normal_submit_to_done_p50_s']:.3f} s); caught up "
                f"{r['restart_to_caught_up_s']:.2f} s after restart; "
                f"{r['accepted']} accepted, 0 lost"
            )
            runs.append(r)
    finally:
        cluster.stop()
    keys = ("kill_to_next_accepted_s", "kill_to_next_completed_s", "normal_submit_to_done_p50_s")
    return {
        "task_latency_hub1": base,
        "task_latency_hub3": r3,
        "runs": runs,
        "median": {k: pct([r[k] for r in runs], 50) for k in keys},
    }


def plot(res: dict[str, Any], path: Path) -> None:
    pub, stall = res["publish"], res["stall"]
    r1, r3 = pub["R1_1_server"], pub["R3_3_server"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    labels = ["one at a time", f"{WINDOW} in flight"]
    xs = range(len(labels))
    k = f"window{WINDOW}_rate_msg_s"
    ax.bar([x - 0.2 for x in xs], [r1["seq_rate_msg_s"], r1[k]], 0.4, label="1 server, R1")
    ax.bar([x + 0.2 for x in xs], [r3["seq_rate_msg_s"], r3[k]], 0.4, label="3 servers, R3")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("JetStream publishes per second")
    ax.set_title("Publish rate (fsync always)")
    ax.legend()
    ax = axes[1]
    ax.bar([-0.2, 0.8], [r1["seq_p50_ms"], r1["seq_p99_ms"]], 0.4, label="1 server, R1")
    ax.bar([0.2, 1.2], [r3["seq_p50_ms"], r3["seq_p99_ms"]], 0.4, label="3 servers, R3")
    ax.set_xticks([0, 1], ["p50", "p99"])
    ax.set_ylabel("publish latency (ms)")
    ax.set_title("Publish latency, one at a time")
    ax.legend()
    ax = axes[2]
    med = stall["median"]
    names = ["next\naccepted", "next\ncompleted", "before the\nkill (p50)", "hub of 1\n(p50)"]
    vals = [
        med["kill_to_next_accepted_s"],
        med["kill_to_next_completed_s"],
        med["normal_submit_to_done_p50_s"],
        stall["task_latency_hub1"]["p50_s"],
    ]
    ax.bar(names, vals, color=["tab:green", "tab:red", "tab:gray", "tab:blue"])
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.2f} s", ha="center", va="bottom")
    ax.set_ylabel("seconds (kill to task; or submit to done)")
    ax.set_title(f"API stall (median of {len(stall['runs'])})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    quick = parse_args(__doc__ or "", argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "quick": quick,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fades-bench-hub-") as tmp:
        res: dict[str, Any] = {
            "publish": bench_publish(Path(tmp), 500 if quick else 3000),
            "stall": bench_stall(Path(tmp), 1 if quick else 3, 10 if quick else 30),
        }
    meta["load_avg_end"] = os.getloadavg()
    meta["wall_s"] = time.perf_counter() - t0
    out = write_json(RESULTS / "hub.json", {"meta": meta, "hub": res})
    plot(res, RESULTS / "hub.png")
    log(f"wrote {out} and {RESULTS / 'hub.png'}")
    log(json.dumps(res["publish"]["ratios_R3_over_R1"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
