"""Live placement: Nimbus against least-loaded, nearest and random on the same task stream.

A real cluster on this machine: one nats-server, the controller (in this process, so the
placer can be swapped between runs) and three ``fades node start`` processes with different
capacities. Each node but the first runs in its own network namespace behind a veth pair
capped with ``tc tbf`` in both directions (no added delay: ``netem`` is not available, so a
slow link's RTT is what the cap itself adds: serialisation and queueing in the bucket, as
the controller's pings measure it). Without root the nodes share loopback and the bench says
so.

The stream: compute-only tasks (their input travels inline, ``INPUT_BYTES`` of JSON) arrive
as a Poisson process; each declares the device that offloads it (a phone: local run
``LOCAL_MS`` and ``LOCAL_MJ``, ``UPLINK_MBPS`` uplink, ``DEVICE_RTT_MS`` to the controller,
budget ``BUDGET_MS``). The same seeded stream is replayed under each placer, on one
controller whose placer is swapped: chunk by chunk (10 tasks), the placers taking turns in
a rotating order and each chunk drained before the next, so that the load other programs
put on the machine is shared out between them rather than falling on one placer's run:

* ``nimbus``: the live Nimbus placer (nodes, the cloud runner, the device);
* ``nimbus_sites``: the same without the device declaration (nodes and the cloud only; the
  budget is still ``BUDGET_MS``), to compare the choice of site with the baselines;
* ``least_loaded``: the locality placer (a compute-only task goes to the least loaded node);
* ``nearest``: the node with the lowest measured RTT;
* ``random``: a uniformly random up node (seeded).

Per task: latency = the device's part (its RTT plus the input over its uplink; modelled from
the declaration, the same for every placer) + submit -> outcome stored at the controller
(measured); a task sent back to the device costs its declared local latency and energy (the
device is not emulated). Device energy: radio power x the device's part when offloaded.
Reported: p50/p99 latency, share within the budget, device energy saved against running
everything locally, Nimbus decision time (live, and ``place()`` over a simulated registry
of 100 nodes with measured figures).

Usage: ``python benchmarks/bench_placement_live.py [--quick]``; writes
``benchmarks/results/placement_live.json`` and ``placement_live_{latency,summary}.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import RESULTS, log, parse_args, pct, write_json
from fades.bench.link import CappedLink
from fades.controller import Controller
from fades.fabric.protocol import NodeInfo, NodeLoad
from fades.fabric.server import EmbeddedNats
from fades.functions.artifact import Artifact
from fades.functions.build import build_python, build_runtime
from fades.functions.keys import SigningKey, TrustStore, install_trusted
from fades.functions.store import FunctionStore
from fades.placers import LocalityPlacer, NimbusPlacer, Placement
from fades.task import Task

LOCAL_MS, LOCAL_MJ, UPLINK_MBPS, DEVICE_RTT_MS, TX_W = 400.0, 500.0, 50.0, 5.0, 1.21
BUDGET_MS = 400.0
INPUT_BYTES = 24_000
TENANT = "facilities"

#: name, workers, link cap in Mbit/s (None: loopback, uncapped)
NODES: list[tuple[str, int, float | None]] = [
    ("edge-fast", 2, None),
    ("edge-mid", 2, 8.0),
    ("edge-slow", 1, 1.0),
]

WORK_SRC = '''"""Some compute on an inline input (a stand-in for a frame)."""


def main(data, params):
    xs = data["frame"]
    acc = 0
    for _ in range(params["rounds"]):
        for x in xs:
            acc = (acc * 31 + x) % 1000003
    return {"acc": acc, "n": len(xs)}
'''


class Nearest:
    """The up node with the lowest RTT the controller measured (unmeasured: last)."""

    name = "nearest"

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    def place(self, task: Task, up: list[NodeInfo], down: list[NodeInfo] = []) -> Placement:  # noqa: B006
        def rtt(n: NodeInfo) -> float:
            s = self.ctl.measure.sites.get(n.name)
            return s.srtt_ms if s is not None and s.srtt_ms is not None else 1e9

        best = min(up, key=lambda n: (rtt(n), n.name))
        return Placement(best.name, f"nearest: {rtt(best):.2f} ms")


class Random:
    name = "random"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def place(self, task: Task, up: list[NodeInfo], down: list[NodeInfo] = []) -> Placement:  # noqa: B006
        return Placement(self.rng.choice(sorted(up, key=lambda n: n.name)).name, "random")


def device_part_ms(nbytes: int) -> float:
    return DEVICE_RTT_MS + nbytes * 8 / (UPLINK_MBPS * 1000)


def make_stream(n: int, rate: float, seed: int) -> list[tuple[float, dict[str, Any]]]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        frame = [rng.randrange(256) for _ in range(INPUT_BYTES // 4)]
        task = {
            "credentials": {"tenant": TENANT, "task_id": f"s{seed}-{i:05d}"},
            "inputs": {"frame": frame},
            "function": {"artifact": "work", "params": {"rounds": 2}, "memory_mib": 64},
            "device": {
                "name": f"phone{i % 4}",
                "local_latency_ms": LOCAL_MS,
                "local_energy_mj": LOCAL_MJ,
                "uplink_mbps": UPLINK_MBPS,
                "rtt_ms": DEVICE_RTT_MS,
                "tx_power_w": TX_W,
                "budget_ms": BUDGET_MS,
            },
        }
        out.append((t, task))
    return out


async def replay(
    ctl: Controller,
    stream: list[tuple[float, dict[str, Any]]],
    tag: str,
    acc: dict[str, Any],
    device: bool = True,
) -> None:
    """Submit the stream on its schedule (ids tagged), wait for every outcome, add the
    figures to ``acc``."""
    t0 = time.monotonic()
    base = stream[0][0]
    stream = [(at - base, t) for at, t in stream]
    receipts: list[tuple[dict[str, Any], Any]] = []

    async def one(at: float, task: dict[str, Any]) -> None:
        await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
        task = json.loads(json.dumps(task))
        task["credentials"]["task_id"] += f"-{tag}"
        if not device:  # the placer cannot answer "run locally"; accounting unchanged
            task.pop("device")
        receipts.append((task, await ctl.submit(task, tenant=TENANT)))

    await asyncio.gather(*(one(at, t) for at, t in stream))
    lat, energy, where = acc["latencies_ms"], acc["energy"], acc["where"]
    decision_ms, cpu_ms, errors = acc["decision_ms"], acc["cpu_ms"], acc["errors"]
    for task, r in receipts:
        nbytes = len(json.dumps(task["inputs"], separators=(",", ":")))
        key = r.node if r.where == "edge" else r.where
        where[key] = where.get(key, 0) + 1
        if r.status == "local":
            ms, mj = LOCAL_MS, LOCAL_MJ
        else:
            rec = await ctl.wait(task["credentials"]["task_id"], 300.0, tenant=TENANT)
            if rec.status != "done" or rec.latency_s is None:
                raise RuntimeError(f"task {rec.task_id} ended {rec.status}: {rec.outcome}")
            ms = device_part_ms(nbytes) + rec.latency_s * 1000
            mj = TX_W * device_part_ms(nbytes)
        rec = await ctl.get(task["credentials"]["task_id"], tenant=TENANT)
        d = rec.decision or {}
        if "decision_ms" in d:
            decision_ms.append(float(d["decision_ms"]))
            cpu_ms.append(float(d["decision_cpu_ms"]))
            chosen = [c for c in d["candidates"] if c["target"] == d["target"]]
            if chosen and r.status != "local":  # predicted - measured, per site
                errors.setdefault(key, []).append(chosen[0]["latency_ms"] - ms)
        lat.append(ms)
        energy.append(mj)


def summarise(acc: dict[str, Any]) -> dict[str, Any]:
    lat, energy, decision_ms = acc["latencies_ms"], acc["energy"], acc["decision_ms"]
    cpu_ms, errors = acc["cpu_ms"], acc["errors"]
    return {
        "tasks": len(lat),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "mean_ms": statistics.fmean(lat),
        "within_budget": sum(x <= BUDGET_MS for x in lat) / len(lat),
        "energy_saved": 1 - statistics.fmean(energy) / LOCAL_MJ,
        "where": acc["where"],
        "decision_ms_p50": pct(decision_ms, 50) if decision_ms else None,
        "decision_ms_p99": pct(decision_ms, 99) if decision_ms else None,
        "decision_cpu_ms_p50": pct(cpu_ms, 50) if cpu_ms else None,
        "prediction_error_ms": {
            k: {"mean": statistics.fmean(v), "mean_abs": statistics.fmean(abs(x) for x in v)}
            for k, v in errors.items()
        },
        "latencies_ms": lat,
    }


def simulated_decision_ms(quick: bool) -> dict[str, float]:
    """``place()`` with 100 registered nodes and figures in a real Measurements."""
    from fades.controller.measure import Measurements
    from fades.outcome import Outcome
    from fades.task import parse_task

    m = Measurements(cloud_workers=2)
    nodes = [
        NodeInfo(
            name=f"n{i:03d}", load=NodeLoad(running=i % 3, capacity=4), heartbeat_at=time.time()
        )
        for i in range(100)
    ]
    rng = random.Random(3)
    for n in nodes:
        s = m.site(n.name)
        for _ in range(20):
            s.rtt_sample(rng.uniform(0.3, 40))
        for k in range(12):
            m.placed(n.name, "t", f"{n.name}-{k}")
            timing = {"queue": 0.01 * (k % 4), "total": 0.03}
            out = Outcome(
                task_id=f"{n.name}-{k}", tenant="t", node=n.name, status="done", timing=timing
            )
            m.observe(out)
    placer = NimbusPlacer()
    placer.attach(m)
    task = parse_task(make_stream(1, 1.0, 9)[0][1])
    times, cpu = [], []
    for _ in range(200 if quick else 2000):
        t0, c0 = time.perf_counter(), time.thread_time()
        placer.place(task, nodes)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    return {
        "nodes": 100,
        "p50_ms": pct(times, 50),
        "p99_ms": pct(times, 99),
        "max_ms": max(times),
        "cpu_p50_ms": pct(cpu, 50),
        "cpu_p99_ms": pct(cpu, 99),
    }


class Cluster:
    """nats-server (all interfaces), node processes (capped ones in namespaces)."""

    def __init__(self, root: Path, pub: Path, capped: bool, artifacts: list[Artifact]) -> None:
        self.root, self.pub, self.capped, self.artifacts = root, pub, capped, artifacts
        self.nats = EmbeddedNats(root / "nats", host="0.0.0.0", mqtt=False)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.links: list[CappedLink] = []
        self.rates: dict[str, Any] = {}

    def start(self) -> None:
        self.nats.start(timeout=120)
        for name, workers, mbit in NODES:
            home = self.root / name
            install_trusted(home / "trusted", self.pub)
            # installed beforehand, as an operator would: the Python runtime is tens of MB,
            # minutes over a 1 Mbit/s link
            store = FunctionStore(home / "artifacts", TrustStore.from_dir(home / "trusted"))
            for art in self.artifacts:
                store.add(art)
            url = f"nats://127.0.0.1:{self.nats.port}"
            wrap: list[str] = []
            if mbit is not None and self.capped:
                link = CappedLink(f"fades-{name}", up_mbit=mbit, down_mbit=mbit).__enter__()
                self.links.append(link)
                url = f"nats://{link.edge_ip}:{self.nats.port}"
                wrap = ["ip", "netns", "exec", link.netns]
            self.rates[name] = {"workers": workers, "link_mbit": mbit if self.capped else None}
            cmd = [*wrap, sys.executable, "-m", "fades", "node", "start", "--name", name,
                   "--nats", url, "--data", str(home), "--heartbeat", "0.5", "--no-ingest",
                   "--capacity", str(workers)]  # fmt: skip
            logf = (self.root / f"{name}.log").open("ab")
            env = dict(
                os.environ,
                PYTHONUNBUFFERED="1",
                PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"),
            )
            self.procs.append(subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env))

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for link in self.links:
            link.close()
        self.nats.stop()


async def run(quick: bool) -> dict[str, Any]:
    n_tasks, rate = (40, 3.0) if quick else (200, 3.0)
    capped = CappedLink.check() is None
    with tempfile.TemporaryDirectory(prefix="fades-live-") as tmp:
        root = Path(tmp)
        key = SigningKey.generate("bench")
        _, pub = key.save(root / "keys")
        src = root / "work.py"
        src.write_text(WORK_SRC)
        runtime, work = build_runtime(key=key), build_python(src, key=key)
        cluster = Cluster(root, pub, capped, [runtime, work])
        cluster.start()
        results: dict[str, Any] = {}
        measured: dict[str, Any] = {}
        try:
            stream = make_stream(n_tasks, rate, seed=7)
            home = root / "ctl"
            install_trusted(home / "trusted", pub)
            ctl = Controller(home, nats=f"nats://127.0.0.1:{cluster.nats.port}",
                             placer="nimbus", cloud_capacity=1, name="bench")  # fmt: skip
            nimbus_sites = NimbusPlacer(eps_t_ms=BUDGET_MS)
            nimbus_sites.attach(ctl.measure)
            placers: dict[str, Any] = {
                "nimbus": ctl.placer,
                "nimbus_sites": nimbus_sites,
                "least_loaded": LocalityPlacer(),
                "nearest": Nearest(ctl),
                "random": Random(11),
            }
            await ctl.start()
            try:
                await ctl.upload(runtime.to_bytes())
                await ctl.upload(work.to_bytes())
                deadline = time.monotonic() + 180
                names = [n for n, _, _ in NODES]
                while not all(
                    (s := ctl.measure.sites.get(n)) is not None and s.pings >= 4 for n in names
                ):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"nodes not measured: {ctl.nodes()}")
                    await asyncio.sleep(0.2)
                # warm every node (the runtime loads once per node process) and the cloud
                warm = make_stream(2 * len(names) + 2, 100.0, seed=99)
                for i, (_, t) in enumerate(warm):
                    t["credentials"]["task_id"] += "-warm"
                    t.pop("device")
                    where = "cloud" if i % (len(names) + 1) == len(names) else "edge"
                    node = None if where == "cloud" else names[i % (len(names) + 1)]
                    await ctl.submit(t, tenant=TENANT, node=node, where=where)
                    await ctl.wait(t["credentials"]["task_id"], 300, tenant=TENANT)
                # the policies take turns on the same chunks of the stream, in a rotating
                # order, so that the machine's changing load is shared out between them
                accs = {
                    p: {
                        "latencies_ms": [],
                        "energy": [],
                        "where": {},
                        "decision_ms": [],
                        "cpu_ms": [],
                        "errors": {},
                    }
                    for p in placers
                }
                chunk = 10
                order = list(placers)
                for k in range(0, n_tasks, chunk):
                    part = stream[k : k + chunk]
                    log(f"tasks {k}-{k + len(part) - 1}: {', '.join(order)}")
                    for policy in order:
                        ctl.placer = placers[policy]
                        await replay(ctl, part, policy, accs[policy], policy != "nimbus_sites")
                    order = order[1:] + order[:1]
                for policy, acc in accs.items():
                    res = results[policy] = summarise(acc)
                    log(f"{policy}: p50 {res['p50_ms']:.0f} ms, p99 {res['p99_ms']:.0f} ms, "
                        f"within {res['within_budget']:.0%}, energy saved "
                        f"{res['energy_saved']:.0%}, where {res['where']}")  # fmt: skip
                measured = {
                    n: {
                        "rtt_ms": ctl.measure.sites[n].srtt_ms,
                        "path_ms": ctl.measure.sites[n].path_ms,
                        "bandwidth_mbps": ctl.measure.sites[n].bandwidth_mbps,
                        "queue_fit": ctl.measure.sites[n].fitted,
                    }
                    for n in [*names, "cloud"]
                    if n in ctl.measure.sites
                }
            finally:
                await ctl.stop()
        finally:
            cluster.stop()
    return {"links": "netns + tbf" if capped else "loopback (no root: not capped)",
            "nodes": cluster.rates, "stream": {"tasks": n_tasks, "rate_per_s": rate,
            "input_bytes": INPUT_BYTES, "budget_ms": BUDGET_MS, "local_ms": LOCAL_MS,
            "local_mj": LOCAL_MJ, "uplink_mbps": UPLINK_MBPS, "device_rtt_ms": DEVICE_RTT_MS},
            "policies": results, "measured": measured}  # fmt: skip


def plot(res: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pol = res["policies"]
    names = list(pol)
    out = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        xs = sorted(pol[n]["latencies_ms"])
        ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=n)
    ax.axvline(BUDGET_MS, color="grey", ls="--", lw=1, label="budget")
    ax.set_xscale("log")
    ax.set_xlabel("latency per task, ms (device part + submit -> outcome)")
    ax.set_ylabel("share of tasks")
    ax.set_title("Live placement: latency CDF, same task stream")
    ax.legend()
    fig.tight_layout()
    out.append(RESULTS / "placement_live_latency.png")
    fig.savefig(out[-1], dpi=120)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    for ax, (key, label) in zip(
        axes,
        [
            ("p99_ms", "p99 latency, ms"),
            ("within_budget", "share within budget"),
            ("energy_saved", "device energy saved"),
        ],
        strict=True,
    ):
        vals = [pol[n][key] for n in names]
        ax.bar(names, vals, color=[f"C{i}" for i in range(len(names))])
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=30)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.0f}" if key == "p99_ms" else f"{v:.0%}", ha="center", va="bottom")
    fig.tight_layout()
    out.append(RESULTS / "placement_live_summary.png")
    fig.savefig(out[-1], dpi=120)
    plt.close("all")
    return out


def main(argv: list[str] | None = None) -> int:
    quick = parse_args(__doc__ or "", argv)
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    res = asyncio.run(run(quick))
    res["decision_time_100_nodes"] = simulated_decision_ms(quick)
    pol = res["policies"]
    base = {n: pol[n]["p99_ms"] for n in pol if n != "nimbus"}
    res["nimbus_p99_vs"] = {n: pol["nimbus"]["p99_ms"] / v for n, v in base.items()}
    res["meta"] = {"quick": quick, "load_avg_start": load0, "load_avg_end": os.getloadavg(),
                   "wall_s": time.perf_counter() - t0, "cpus": os.cpu_count()}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    pngs = plot(res)
    with contextlib.suppress(Exception):
        for p in pol.values():
            p["latencies_ms"] = [round(x, 2) for x in p["latencies_ms"]]
    path = write_json(RESULTS / "placement_live.json", res)
    log(f"nimbus p99 / baseline p99: {res['nimbus_p99_vs']}")
    log(f"decision time, 100 nodes: {res['decision_time_100_nodes']}")
    log(f"wrote {path} and {', '.join(p.name for p in pngs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
