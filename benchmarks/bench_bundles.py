"""Bundles between pipeline stages: throughput and hop latency over JetStream, with the
server's default fsync and with ``sync_interval: always``; small and 250 KB bundles (inline,
and through the object store); and the in-process hand-over between stages on one node.

Run ``python benchmarks/bench_bundles.py [--quick]``. Writes ``benchmarks/results/bundles.json``
and ``benchmarks/results/bundles.png``. Every part is real: nats-server processes (one per sync
setting, file storage in a temporary folder), nats-py, and for the hand-over two NodeAgents
running real stage tasks in wasmtime.

1. Throughput: bundles published one at a time (each acknowledged by the server, with its
   message id, as the engine does), in bundles/s and MB/s. Baseline, same run: the same
   publishes on the server with the default sync.
2. Hop latency: one bundle at a time, from ``send`` to the consumer holding its value
   (``received - sent_at``). Baseline, same run: a plain NATS core publish -> subscribe of the
   same bytes (no storage).
3. Hand-over: stage a -> stage b in a two-stage pipeline, b's hop as the engine records it in
   its stage event, with both stages on one node (in process) and on two nodes (a bundle
   over JetStream; the baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fades.aiostop import wait_for
from fades.bus.nats import NatsBus
from fades.fabric import EmbeddedNats, FabricSettings
from fades.pipelines import bundles as bundles_mod
from fades.pipelines.bundles import BundleIO
from fades.pipelines.protocol import (
    EVENTS_STREAM,
    PLANS_BUCKET,
    TRIGGER,
    Assignment,
    Bundle,
    Plan,
    StageEvent,
    ensure_events_stream,
)
from fades.pipelines.spec import PipelineSpec

RESULTS = Path(os.environ.get("FADES_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
SMALL = {"ice": True, "road": "r1", "t": 1.5}
LARGE_BYTES = 250_000


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q))


def lat(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50_ms": pct(xs, 50) * 1e3, "p90_ms": pct(xs, 90) * 1e3,
            "mean_ms": statistics.fmean(xs) * 1e3}  # fmt: skip


def bundle(stage: str, i: int) -> Bundle:
    now = time.time()
    return Bundle(pipeline="bench", plan_version=1, run=f"r{i}", stage=stage, from_stage="a",
                  producer="_", run_started_at=now, sent_at=now)  # fmt: skip


async def fabric_part(server: EmbeddedNats, n_small: int, n_large: int) -> dict[str, Any]:
    bus = await NatsBus.connect(server.url, name="bench")
    io = BundleIO(bus)
    await bus.stream("FADES_B_BENCH", ["fades.bundle.bench.>"])
    large = "x" * LARGE_BYTES
    out: dict[str, Any] = {}
    cases = [("small", SMALL, n_small, False), ("250KB_inline", large, n_large, False),
             ("250KB_object_store", large, n_large, True)]  # fmt: skip
    # a work-queue stream takes one consumer per subject: each phase has its own stage name
    for k, (name, value, n, via_objects) in enumerate(cases):
        saved = bundles_mod.INLINE_MAX
        bundles_mod.INLINE_MAX = 0 if via_objects else saved
        try:
            t0 = time.perf_counter()
            for i in range(n):
                await io.send(bundle(f"tp{k}", i), value)
            dt = time.perf_counter() - t0
            size = bundles_mod.encoded_size(value)
            it = bus.consume("FADES_B_BENCH", f"tp{k}", f"fades.bundle.bench.tp{k}._").__aiter__()
            for _ in range(n):  # drain, so the hop part starts from an empty stream
                d = await anext(it)
                await d.ack()
            await it.aclose()
            hops: list[float] = []
            it = bus.consume("FADES_B_BENCH", f"h{k}", f"fades.bundle.bench.h{k}._").__aiter__()
            for i in range(n):
                await io.send(bundle(f"h{k}", i), value)
                d = await anext(it)
                b = Bundle.decode(d.data)
                await io.value(b)
                hops.append(time.time() - b.sent_at)
                await d.ack()
                await io.forget(b)
            await it.aclose()
        finally:
            bundles_mod.INLINE_MAX = saved
        out[name] = {"bytes": size, "n": n, "bundles_per_s": n / dt,
                     "mb_per_s": n * size / dt / 1e6, "hop": lat(hops)}  # fmt: skip
    # baseline for the hop: core NATS publish -> subscribe of the same bytes, no storage
    got: asyncio.Queue[float] = asyncio.Queue()

    async def on_msg(subject: str, data: bytes) -> None:
        got.put_nowait(time.perf_counter())

    await bus.subscribe("bench.core", on_msg)
    await bus.nc.flush()
    for name, value, n, _ in cases[:2]:
        data = json.dumps(value).encode()
        xs = []
        for _ in range(n):
            t0 = time.perf_counter()
            await bus.send("bench.core", data)
            xs.append(await wait_for(got.get(), 10) - t0)
        out[name]["core_hop"] = lat(xs)
    await bus.close()
    return out


STAGE_A = "def main(data, params):\n    return {'v': 1, 'pad': 'x' * 100}\n"
STAGE_B = "def main(data, params):\n    return data['a']\n"


def prepare_home(tmp: Path, name: str, arts: list[Any], key: Any) -> Path:
    from fades.functions.keys import TrustStore, public_pem
    from fades.functions.store import FunctionStore

    home = tmp / name
    (home / "trusted").mkdir(parents=True)
    (home / "trusted" / f"{key.id}.pub").write_bytes(public_pem(key.public))
    store = FunctionStore(home / "artifacts", TrustStore.from_dir(home / "trusted"))
    for art in arts:
        store.add(art)
    return home


async def handover_part(tmp: Path, runs: int) -> dict[str, Any]:
    from fades.functions.build import build_python, build_runtime
    from fades.functions.keys import SigningKey
    from fades.node.agent import NodeAgent

    key = SigningKey.generate("bench-bundles")
    src = tmp / "src"
    src.mkdir()
    (src / "sa.py").write_text(STAGE_A)
    (src / "sb.py").write_text(STAGE_B)
    arts = [build_runtime(key=key), build_python(src / "sa.py", key=key),
            build_python(src / "sb.py", key=key)]  # fmt: skip
    server = EmbeddedNats(tmp / "nats-handover", mqtt=False)
    server.start(timeout=60)
    agents = []
    try:
        for n in ("n1", "n2"):
            agent = NodeAgent(n, prepare_home(tmp, n, arts, key), FabricSettings(server.url),
                              heartbeat_s=1.0, ingest=False)  # fmt: skip
            await agent.start()
            agents.append(agent)
        bus = await NatsBus.connect(server.url, name="bench-client")
        io = BundleIO(bus)
        await ensure_events_stream(bus)
        seen: dict[tuple[str, str], StageEvent] = {}

        async def events() -> None:
            async for d in bus.consume(EVENTS_STREAM, "bench-ev", "fades.pevent.>"):
                e = StageEvent.decode(d.data)
                seen[(e.pipeline, e.run)] = e if e.stage == "b" else seen.get((e.pipeline, e.run))  # type: ignore[assignment]
                await d.ack()

        watcher = asyncio.create_task(events())
        out: dict[str, Any] = {}
        kv = await bus.kv(PLANS_BUCKET)
        for name, b_node in (("co_located", "n1"), ("cross_node", "n2")):
            spec = PipelineSpec.model_validate({
                "name": name.replace("_", "-"), "credentials": {"tenant": "bench"},
                "stages": [{"name": "a", "function": {"artifact": "sa", "memory_mib": 32}},
                           {"name": "b", "after": ["a"],
                            "function": {"artifact": "sb", "memory_mib": 32}}]})  # fmt: skip
            plan = Plan(pipeline=spec.name, tenant="bench", spec=spec.to_dict(),
                        assignments=[Assignment(stage="a", node="n1"),
                                     Assignment(stage="b", node=b_node)],
                        submitted_at=time.time())  # fmt: skip
            await io.ensure(plan)
            await kv.put(plan.pipeline, plan.encode())
            await asyncio.sleep(1.0)  # the engines pick the plan up
            hops, totals = [], []
            for i in range(runs):
                now = time.time()
                await io.send(Bundle(pipeline=plan.pipeline, plan_version=1, run=f"r{i}",
                                     stage="a", from_stage=TRIGGER, producer=TRIGGER,
                                     run_started_at=now, sent_at=now), None)  # fmt: skip
                deadline = time.monotonic() + 60
                while seen.get((plan.pipeline, f"r{i}")) is None:
                    if time.monotonic() > deadline:
                        counters = {a.name: a.pipelines.counters for a in agents}
                        raise RuntimeError(f"{name}: run r{i} did not finish: {counters}")
                    await asyncio.sleep(0.002)
                e = seen[(plan.pipeline, f"r{i}")]
                hops.append(e.timing["hop"])
                totals.append(e.timing["total"])
            out[name] = {"hop": lat(hops), "run_total": lat(totals)}
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await bus.close()
        return out
    finally:
        for agent in agents:
            await agent.stop()
        server.stop()


def plot(res: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    syncs = list(res["fabric"])
    cases = list(res["fabric"][syncs[0]])
    x = np.arange(len(cases))
    w = 0.8 / (len(syncs) + 1)  # room for the core-NATS baseline next to each group
    for k, s in enumerate(syncs):
        axes[0].bar(x + k * w, [res["fabric"][s][c]["bundles_per_s"] for c in cases], w, label=s)
        axes[1].bar(x + k * w, [res["fabric"][s][c]["hop"]["p50_ms"] for c in cases], w, label=s)
    axes[1].bar(x[:2] + len(syncs) * w,
                [res["fabric"][syncs[0]][c]["core_hop"]["p50_ms"] for c in cases[:2]], w,
                label="core NATS, no storage (baseline)")  # fmt: skip
    for ax, title in ((axes[0], "throughput (bundles/s, log)"), (axes[1], "hop p50 (ms, log)")):
        ax.set_xticks(x + w / 2)
        ax.set_xticklabels(cases, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=8)
    ho = res["handover"]
    names = list(ho)
    axes[2].bar(names, [ho[n]["hop"]["p50_ms"] for n in names], color=["tab:green", "tab:gray"])
    axes[2].set_title("stage a -> b hop p50 (ms): one node vs two nodes")
    for i, n in enumerate(names):
        axes[2].text(i, ho[n]["hop"]["p50_ms"], f"{ho[n]['hop']['p50_ms']:.2f}", ha="center",
                     va="bottom")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer bundles and runs")
    quick = ap.parse_args(argv).quick
    n_small, n_large, runs = (200, 20, 10) if quick else (2000, 100, 100)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"meta": {"quick": quick, "python": platform.python_version(),
                                    "cpus": os.cpu_count(),
                                    "load_avg_start": os.getloadavg()}}  # fmt: skip
    res["fabric"] = {}
    with tempfile.TemporaryDirectory(prefix="fades-bench-bundles-") as tmp:
        for label, sync in (("default (2m)", None), ("always", "always")):
            server = EmbeddedNats(Path(tmp) / f"nats-{sync}", mqtt=False, sync_interval=sync)
            server.start(timeout=60)
            try:
                res["fabric"][label] = asyncio.run(fabric_part(server, n_small, n_large))
            finally:
                server.stop()
            print(label, json.dumps(res["fabric"][label], indent=1)[:2000], flush=True)
        res["handover"] = asyncio.run(handover_part(Path(tmp), runs))
    base, always = res["fabric"]["default (2m)"], res["fabric"]["always"]
    res["ratios"] = {
        f"always_vs_default_throughput_{c}": always[c]["bundles_per_s"] / base[c]["bundles_per_s"]
        for c in base
    }
    res["ratios"]["handover_vs_cross_node_hop_p50"] = (
        res["handover"]["co_located"]["hop"]["p50_ms"]
        / res["handover"]["cross_node"]["hop"]["p50_ms"]
    )
    res["meta"]["load_avg_end"] = os.getloadavg()
    res["meta"]["wall_s"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bundles.json").write_text(json.dumps(res, indent=2) + "\n")
    plot(res, RESULTS / "bundles.png")
    print(json.dumps({"ratios": res["ratios"], "handover": res["handover"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
