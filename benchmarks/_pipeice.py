"""Black ice through the real pipeline: the part of ``bench_pipelines.py`` that runs
``examples/pipelines/black-ice.yaml`` on node agents (not a benchmark on its own).

The road testbed (2 segments x 2 lampposts, seed 1) is replayed into two lamppost nodes'
stores so that a chosen instant is "now" (its timestamps moved, nothing after it), then one
run is triggered: ``detect`` scattered on both nodes, ``fuse`` and ``warn`` on n1, the
warning published on ``warnings.road1``. Half the instants are inside a segment's icing
episode, half outside, drawn with a fixed seed. Per instant: whether the pipeline warned,
the native decision of the same functions on the same windows (the baseline), the ground
truth, the time from the run's start to the warning received on its subject, and from the
newest reading behind it to the warning.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fades.aiostop import wait_for
from fades.broker import SQLiteConnector
from fades.functions.artifact import Artifact
from fades.functions.build import build_python
from fades.functions.keys import SigningKey
from fades.pipelines.protocol import Assignment, Plan
from fades.pipelines.spec import load_pipeline
from fades.testbed.road import ROAD_SENSOR_TYPES, RoadSim, in_episodes, populate_road
from fades.testbed.road_eval import EXAMPLES, RoadWindows, Score, call_native, load_function

HOLDS = {"n1": ["seg1-lamp1", "seg2-lamp1"], "n2": ["seg1-lamp2", "seg2-lamp2"]}


def _plan() -> Plan:
    spec = load_pipeline(EXAMPLES.parent / "pipelines" / "black-ice.yaml")
    run = spec.run.model_copy(update={"mode": "on-demand", "every_s": None, "for_s": None})
    spec = spec.model_copy(update={"run": run})
    assignments = [Assignment(stage="detect", instance=n, node=n) for n in HOLDS]
    assignments += [Assignment(stage="fuse", node="n1"), Assignment(stage="warn", node="n1")]
    return Plan(pipeline=spec.name, tenant=spec.tenant, spec=spec.to_dict(),
                assignments=assignments, submitted_at=time.time())  # fmt: skip


def _instants(sim: RoadSim, n: int) -> list[float]:
    truth = sim.truth()["segments"]
    eps = [e for v in truth.values() for e in v["episodes"]]
    grid = sim.minutes[15:-1]
    icy = grid[in_episodes(grid, eps)]
    dry = grid[~in_episodes(grid, eps)]
    rng = np.random.default_rng(7)
    pick = [*rng.choice(icy, n // 2, replace=False), *rng.choice(dry, n - n // 2, replace=False)]
    return [float(t) for t in pick]


async def black_ice(
    root: Path, key: SigningKey, runtime: Artifact, n: int, log: Any
) -> dict[str, Any]:
    import bench_pipelines as bp

    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    arts = [
        build_python(EXAMPLES / f"{f}.py", key=key) for f in ("ice_detect", "ice_fuse", "ice_warn")
    ]
    sim = RoadSim(4, seed=1, start=datetime(2026, 1, 5, tzinfo=UTC), segments=2, lampposts=2)
    seg_eps = {s: v["episodes"] for s, v in sim.truth()["segments"].items()}
    windows = RoadWindows(sim)
    detect, fuse = load_function("ice_detect"), load_function("ice_fuse")
    bed = bp.Bed(root, list(HOLDS), key)
    bed.extra = arts
    await bed.start(runtime, arts[0])
    heard: list[tuple[float, dict[str, Any]]] = []

    async def listener(subject: str, data: bytes) -> None:
        heard.append((time.time(), json.loads(data)))

    rows = []
    try:
        await bed.bus.subscribe("warnings.road1", listener)
        plan = _plan()
        await bed.put(plan)
        for k, t in enumerate(_instants(sim, n)):
            shift = time.time() - t
            for node, lamps in HOLDS.items():
                store = SQLiteConnector(bed.root / node / "readings.db")
                try:
                    store.clear(sensor_type=list(ROAD_SENSOR_TYPES))
                    populate_road(store, sim, 60.0, lamps, shift_s=shift, until=t)
                finally:
                    store.close()
            before = len(heard)
            ev = await wait_for(await bed.trigger(plan, f"i{k:04d}"), 120)
            warned = ev.status == "done"
            got = None
            if warned:
                deadline = time.monotonic() + 10
                while len(heard) == before and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                got = heard[before] if len(heard) > before else None
            found = {
                lp: call_native(detect, {"road": windows.window(lp, t, 900.0)}, {"recent_s": 600})
                for lp in sim.lamps
            }
            native = bool(call_native(fuse, inputs={"detect": found})["ice"])
            real = any(bool(in_episodes(t, e)[0]) for e in seg_eps.values())
            row = {"t": t, "truth": real, "pipeline": warned, "native": native,
                   "status": ev.status}  # fmt: skip
            if got is not None:
                row["start_to_warning_s"] = got[0] - ev.run_started_at
                row["reading_to_warning_s"] = got[0] - got[1]["value"]["reading_ts"]
            rows.append(row)
    finally:
        await bed.stop()
    score = Score()
    for r in rows:
        score.add(r["pipeline"], r["truth"])
    lat = [r["start_to_warning_s"] for r in rows if "start_to_warning_s" in r]
    age = [r["reading_to_warning_s"] for r in rows if "reading_to_warning_s" in r]
    out = {
        "instants": len(rows),
        "road_score": score.to_dict(),
        "agrees_with_native": sum(r["pipeline"] == r["native"] for r in rows),
        "warnings": len(lat),
        "start_to_warning_ms": bp.summary(lat, 1000) if lat else None,
        "reading_to_warning_s": bp.summary(age) if age else None,
        "rows": rows,
    }
    log(f"   {len(rows)} instants: pipeline F1 {score.f1}, agrees with native "
        f"{out['agrees_with_native']}/{len(rows)}; run start -> warning p50 "
        f"{bp.pct(lat, 50) * 1000 if lat else float('nan'):.0f} ms; newest reading -> warning "
        f"p50 {bp.pct(age, 50) if age else float('nan'):.0f} s (readings every 60 s)")  # fmt: skip
    return out
