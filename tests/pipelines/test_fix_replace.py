"""Replacing a running pipeline: a new ``on_reading`` pattern takes effect on the nodes, and
the runs in flight end ``cancelled`` naming the version that replaced them (real
nats-server, controller and node agents)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.conftest import Bed  # type: ignore[import-not-found]
from controller.test_api import artifact_of  # type: ignore[import-not-found]
from fades.bus.nats import NatsBus
from fades.fabric import EmbeddedNats
from fades.functions.keys import SigningKey

from .test_service import up, wait_for

FUNCS = {
    "react": """
def main(data, params):
    return {"subject": data["trigger"]["subject"]}
""",
    "slow": """
import time

def main(data, params):
    time.sleep(1.5)
    return {"run": data["_pipeline"]["run"]}
""",
}


@pytest.fixture
def fix_bed(nats_server: EmbeddedNats, tmp_path: Path, signing_key: SigningKey) -> Iterator[Bed]:
    b = Bed(nats_server, tmp_path, signing_key)
    try:
        yield b
    finally:
        b.close()


def spec(run: dict[str, Any], fn: str) -> dict[str, Any]:
    return {
        "name": "rp",
        "credentials": {"tenant": "facilities", "priority": 6},
        "run": run,
        "stages": [
            {
                "name": "s",
                "function": {"artifact": fn, "memory_mib": 32, "time_budget_ms": 20000},
                "node": "n1",
            }
        ],
    }


def send(bed: Bed, subject: str, n: int) -> None:
    async def go() -> None:
        bus = await NatsBus.connect(bed.nats.url, name="test-readings")
        try:
            for i in range(n):
                reading = {"value": i, "ts": time.time() + i / 1000}
                await bus.send(subject, json.dumps(reading).encode())
        finally:
            await bus.close()

    bed.run(go())


def start(bed: Bed, prepare_home: Callable[..., Path]) -> Path:
    home = prepare_home("n1", functions=FUNCS, readings=False)
    bed.start_controller()
    bed.agent("n1", home)
    up(bed, "n1")
    return home


def test_replace_with_a_new_on_reading_pattern_starts_runs_on_the_new_one(
    fix_bed: Bed, prepare_home: Callable[..., Path]
) -> None:
    bed = fix_bed
    home = start(bed, prepare_home)
    old = {"mode": "automatic", "on_reading": "sensors.n1.road.surface_temp"}
    new = {"mode": "automatic", "on_reading": "sensors.n1.bridge.surface_temp"}
    with bed.client() as c:
        c.upload(artifact_of(home, "react"))
        c.submit_pipeline(spec(old, "react"))

        def subjects() -> set[str]:
            return {
                r["results"]["s"]["subject"]
                for r in c.pipeline_runs("rp", limit=1000)
                if r["status"] == "done"
            }

        def old_runs() -> set[str]:
            send(bed, old["on_reading"], 1)
            return subjects()

        wait_for(old_runs, timeout=90, what="a run on the old pattern")
        assert c.submit_pipeline(spec(new, "react"), replace=True)["version"] == 2

        def new_runs() -> bool:
            send(bed, new["on_reading"], 1)
            return new["on_reading"] in subjects()

        wait_for(new_runs, timeout=90, what="a run on the new pattern after the replace")


def test_runs_in_flight_when_replaced_end_cancelled_naming_the_new_version(
    fix_bed: Bed, prepare_home: Callable[..., Path]
) -> None:
    bed = fix_bed
    home = start(bed, prepare_home)
    with bed.client() as c:
        c.upload(artifact_of(home, "slow"))
        first = c.submit_pipeline(spec({"mode": "on-demand", "runs": 3}, "slow"))["runs"]
        assert len(first) == 3
        out = c.submit_pipeline(spec({"mode": "on-demand", "runs": 1}, "slow"), replace=True)
        assert out["version"] == 2
        runs = {r["run"]: r for r in c.pipeline_runs("rp")}
        # every run of version 1 has ended at once: none stays running until a deadline
        assert all(runs[r]["status"] != "running" for r in first), runs
        cancelled = [runs[r] for r in first if runs[r]["status"] == "cancelled"]
        assert cancelled, runs  # one slow stage at a time: at least the last was in flight
        assert all(r["reason"] == "replaced by version 2" for r in cancelled), cancelled
        # the new version's run goes on and ends done
        (new_run,) = out["runs"]
        assert c.pipeline_run("rp", new_run, wait=60)["status"] == "done"


def test_a_replaced_plan_with_a_new_period_restarts_the_node_timer(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    """Straight through a node's engine: every_s 3600 -> every_s 1 starts runs each second;
    then on_reading instead: the timer stops and the node listens on the pattern."""
    from tests.pipelines.test_engine import FUNCS as ENGINE_FUNCS
    from tests.pipelines.test_engine import agents, harness, make_plan, run, stage
    from tests.pipelines.test_engine import wait_for as await_for

    homes = {"n1": prepare_home("n1", functions=ENGINE_FUNCS, readings=False)}

    async def main() -> None:
        async with harness(nats_server) as h, agents(nats_server, homes) as ags:
            trig = ags["n1"].pipelines.triggers

            def plan(version: int, **run: Any) -> Any:
                return make_plan("per", [stage("a", "fa")], {"a": "n1"}, version=version,
                                 run={"mode": "automatic", **run})  # fmt: skip

            await h.put_plan(plan(1, every_s=3600))
            await await_for(lambda: "per" in trig.timers, 20, "the hourly timer")
            await h.put_plan(plan(2, every_s=1))
            await await_for(lambda: h.events.of(stage="a", status="done"), 60,
                            "a run of the 1 s period after the replace")  # fmt: skip
            await h.put_plan(plan(3, on_reading="sensors.n1.*.temperature"))
            await await_for(lambda: "per" not in trig.timers
                            and trig.listening.get("per") == "sensors.n1.*.temperature",
                            20, "the timer stopped, listening on the pattern")  # fmt: skip

    run(main())
