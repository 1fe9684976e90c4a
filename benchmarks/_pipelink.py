"""A pipeline whose middle node sits behind the capped link: the part of
``bench_pipelines.py`` that needs root, ``ip`` and ``tc`` (not a benchmark on its own).

:class:`fades.bench.link.CappedLink` makes a network namespace joined by a veth pair with
``tbf`` caps: 0.574 Mbit/s towards the namespace and 45.38 Mbit/s back (the FADES paper's
remote link). The nats-server and node ``n1`` stay in the root namespace; node ``n2`` runs
as its own process inside the namespace, so every byte the fabric sends it crosses the slow
direction. The pipeline is A on n1 -> B on n2 -> C on n1, with A passing either a compact
result (64 bytes of payload) or the raw data (250 KB) to B. The same run's loopback numbers
(section 3 and P1 of section 1) are the baseline.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fades.bench.link import CappedLink
from fades.fabric import EmbeddedNats, FabricSettings
from fades.functions.artifact import Artifact
from fades.functions.keys import SigningKey
from fades.node.agent import NodeAgent

FADES = str(Path(sys.executable).parent / "fades")


async def capped(
    root: Path, key: SigningKey, runtime: Artifact, relay: Artifact, runs: int, log: Any
) -> dict[str, Any]:
    import bench_pipelines as bp

    why = CappedLink.check()
    if why is not None:
        log(f"   skipped: {why}")
        return {"skipped": why}
    out: dict[str, Any] = {}
    with CappedLink("fades-pipes") as link:
        bed = bp.Bed(root, [], key)
        bed.nats = EmbeddedNats(root / "nats", host=link.edge_ip, mqtt=False, name="bench-cap")
        await bed.start(runtime, relay)
        homes = {n: bed.home(n, runtime, relay) for n in ("n1", "n2")}
        agent = NodeAgent("n1", homes["n1"], FabricSettings(bed.nats.url), heartbeat_s=1.0,
                          ingest=False)  # fmt: skip
        await agent.start()
        bed.agents["n1"] = agent
        node = [FADES, "node", "start", "--name", "n2", "--nats", bed.nats.url]
        cmd = link.ns_cmd([*node, "--data", str(homes["n2"]), "--heartbeat", "2", "--no-ingest"])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            if line.strip() != "node n2 ready":
                raise RuntimeError(f"node n2 did not start behind the link: {line!r}")
            for label, nbytes in (("compact", 64), ("raw", bp.BIG)):
                stages = [("a", "n1", []), ("b", "n2", ["a"]), ("c", "n1", ["b"])]
                plan = bp.make_plan(f"cap-{label}", stages, 64, sizes={"a": nbytes})
                t0 = time.perf_counter()
                times = await bp.sequential(bed, plan, runs, warm=1)
                cross, _ = bp.hops(bed, plan)
                into_b = [
                    e.timing.get("hop", 0.0)
                    for e in bed.events
                    if e.pipeline == plan.pipeline and e.stage == "b" and e.status == "done"
                ]
                out[label] = {
                    "bundle_bytes_a_to_b": nbytes,
                    "completion_ms": bp.summary(times, 1000),
                    "hop_into_capped_node_ms_p50": bp.pct(into_b, 50) * 1000,
                    "hop_ms_p50": bp.pct(cross, 50) * 1000,
                    "wall_s": time.perf_counter() - t0,
                }
                log(f"   {label}: A->B {nbytes:,} B, completion p50 "
                    f"{bp.pct(times, 50) * 1000:.0f} ms, hop into n2 p50 "
                    f"{bp.pct(into_b, 50) * 1000:.0f} ms")  # fmt: skip
            out["link"] = link.describe()
            out["raw_vs_compact_p50"] = (
                out["raw"]["completion_ms"]["p50"] / out["compact"]["completion_ms"]["p50"]
            )
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            await bed.stop()
    return out
