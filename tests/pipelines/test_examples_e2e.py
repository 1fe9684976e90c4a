"""The black-ice pipeline end to end on real node agents (real nats-server, wasmtime, SQLite):
detection scattered over the lamppost nodes, fused along the road, and the warning published
on ``warnings.road1`` when a segment is icy, not when the road is dry.

The road testbed's readings are replayed with their timestamps moved so that a chosen instant
(an icing episode, then a mild dry night) is "now" for the stages' ``last_seconds`` windows.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tests.pipelines.test_engine import agents, harness, run, wait_for

from fades.broker import SQLiteConnector
from fades.fabric import EmbeddedNats
from fades.pipelines.protocol import Assignment, Plan
from fades.pipelines.spec import load_pipeline
from fades.testbed.road import RoadSim, populate_road
from fades.testbed.road_eval import RoadWindows, call_native, load_function

ROOT = Path(__file__).resolve().parents[2]
FUNCS = {n: (ROOT / "examples" / "functions" / f"{n}.py").read_text()
         for n in ("ice_detect", "ice_fuse", "ice_warn")}  # fmt: skip
HOLDS = {"n1": ["seg1-lamp1", "seg2-lamp1"], "n2": ["seg1-lamp2", "seg2-lamp2"]}


def black_ice_plan() -> Plan:
    spec = load_pipeline(ROOT / "examples" / "pipelines" / "black-ice.yaml")
    spec = spec.model_copy(update={"run": spec.run.model_copy(
        update={"mode": "on-demand", "every_s": None, "for_s": None})})  # fmt: skip
    assignments = [Assignment(stage="detect", instance=n, node=n) for n in HOLDS]
    assignments += [Assignment(stage="fuse", node="n1"), Assignment(stage="warn", node="n1")]
    return Plan(pipeline=spec.name, tenant=spec.tenant, spec=spec.to_dict(),
                assignments=assignments, submitted_at=time.time())  # fmt: skip


def replay(homes: dict[str, Path], sim: RoadSim, at: float) -> float:
    """Store each node's lampposts with ``at`` moved to now; returns the shift."""
    shift = time.time() - at
    for node, lamps in HOLDS.items():
        store = SQLiteConnector(homes[node] / "readings.db")
        try:
            store.clear(sensor_type=["surface_temp", "air_temp", "humidity", "dew_point"])
            populate_road(store, sim, 60.0, lamps, shift_s=shift, until=at)
        finally:
            store.close()
    return shift


def test_black_ice_is_warned_on_its_subject_and_a_dry_road_is_not(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    sim = RoadSim(4, seed=1, start=datetime(2026, 1, 5, tzinfo=UTC), segments=2, lampposts=2)
    eps = sim.truth()["segments"]["seg1"]["episodes"]
    lo, hi = max(eps, key=lambda e: e[1] - e[0])
    icy = (lo + hi) / 2
    lamp = sim.lamps["seg1-lamp1"]
    hour = (sim.minutes % 86400) / 3600
    calm = np.flatnonzero((hour >= 1) & (hour < 5) & (lamp.surface > 1.5) & (lamp.rh < 90))
    assert len(calm) and hi - lo > 3600
    dry = float(sim.minutes[calm[len(calm) // 2]])
    homes = {n: prepare_home(n, functions=FUNCS, readings=False) for n in HOLDS}
    # the native decision at the same instants, for comparison
    w = RoadWindows(sim)
    detect, fuse = load_function("ice_detect"), load_function("ice_fuse")

    def native(t: float) -> bool:
        found = {lp: call_native(detect, {"road": w.window(lp, t, 900.0)}, {"recent_s": 600})
                 for lp in sim.lamps}  # fmt: skip
        return bool(call_native(fuse, inputs={"detect": found})["ice"])

    async def main() -> None:
        warnings: list[tuple[float, dict[str, Any]]] = []
        async with harness(nats_server) as h, agents(nats_server, homes):

            async def heard(subject: str, data: bytes) -> None:
                warnings.append((time.time(), json.loads(data)))

            await h.bus.subscribe("warnings.road1", heard)
            plan = black_ice_plan()
            await h.put_plan(plan)
            shift = replay(homes, sim, icy)
            await h.trigger(plan, "icy")
            fin = await h.events.wait("warn", run="icy", stage="warn", timeout=120)
            assert fin.status == "done", (fin.error, h.events.brief())
            await wait_for(lambda: warnings, 30, "the warning on warnings.road1")
            got_at, note = warnings[0]
            warning = note["value"]
            assert note["stage"] == "warn" and "seg1" in warning["segments"]
            assert warning["road"] == "road1" and "Black ice" in warning["message"]
            assert native(icy)  # the same decision natively
            # the newest reading behind the warning is at most a sampling interval old
            assert 0 <= got_at - warning["reading_ts"] < 120 + 30
            assert abs((warning["reading_ts"] - shift) - icy) < 120
            detects = h.events.of(run="icy", stage="detect", status="done")
            assert {e.instance for e in detects} == set(HOLDS)

            replay(homes, sim, dry)
            await h.trigger(plan, "dry")
            ev = await h.events.wait("warn", run="dry", stage="warn", timeout=120)
            assert ev.status == "skipped" and "ice == true" in (ev.error or "")
            assert not native(dry)
            await asyncio.sleep(1.0)
            assert len(warnings) == 1  # nothing for the dry road

    run(main())


def test_a_lamppost_node_that_never_answers_is_fused_around(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    """detect on n2 is planned but n2 is not running: fuse runs after its gather timeout
    with n2 listed missing, and the icy segment is still warned from n1's lampposts."""
    sim = RoadSim(4, seed=1, start=datetime(2026, 1, 5, tzinfo=UTC), segments=2, lampposts=2)
    lo, hi = max(sim.truth()["segments"]["seg1"]["episodes"], key=lambda e: e[1] - e[0])
    homes = {n: prepare_home(n, functions=FUNCS, readings=False) for n in HOLDS}

    async def main() -> None:
        async with harness(nats_server) as h, agents(nats_server, {"n1": homes["n1"]}):
            plan = black_ice_plan()
            await h.put_plan(plan)
            replay(homes, sim, (lo + hi) / 2)
            await h.trigger(plan, "r1")
            fused = await h.events.wait("fuse", run="r1", stage="fuse", timeout=120)
            assert fused.status == "done"
            warn = await h.events.wait("warn", run="r1", stage="warn", status="done", timeout=60)
            assert "seg1" in warn.result["segments"]

    run(main())


def test_the_demos_pipeline_part_reports_and_fails_over(tmp_path: Path) -> None:
    """The building report across a local cluster's node processes, then the report's node
    killed -9: the next run still ends done, with that node's rooms listed missing."""
    from rich.console import Console

    from fades.cluster import LocalCluster
    from fades.demo_pipeline import run_pipeline_demo

    cluster = LocalCluster(tmp_path / "cluster", nodes=3, days=0.05, sensors=False,
                           say=lambda s: None)  # fmt: skip
    cluster.prepare()
    cluster.start()
    try:
        with open(os.devnull, "w") as sink:
            out = run_pipeline_demo(cluster, Console(width=160, file=sink))
    finally:
        cluster.stop()
    assert out["first"] == "done" and out["after_kill"] == "done"
    report = out["report"]
    assert report["missing"] == [out["victim"]] and out["victim"] not in report["nodes"]
    assert len(report["nodes"]) == 2 and report["rooms"]
