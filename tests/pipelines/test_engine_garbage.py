"""A stage that emits what its downstream stage can never take (found by the hostile review).

A result may be up to 8 MiB and 100 levels deep, but a task's inputs are bounded (512 KiB of
JSON, 32 levels, 100,000 values). The downstream stage's task was then refused at every
delivery, logged "left for redelivery" about once a second forever, and the run stayed
``running``. Now the downstream stage fails, naming why, and the next run goes through.
The same for a stage whose data its tenant may not read (AccessDenied at submit).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fades.fabric import EmbeddedNats

from .test_engine import FUNCS, TENANT, agents, harness, make_plan, run, stage

EMIT = """
def main(data, params):
    how = data["_pipeline"]["run"]
    if how.startswith("big"):
        return {"v": 1, "blob": "z" * 700_000}
    if how.startswith("deep"):
        x = 1
        for i in range(60):
            x = [x]
        return {"v": 1, "deep": x}
    if how.startswith("wide"):
        return {"v": 1, "wide": list(range(150_000))}
    return {"v": 1}
"""


def test_an_upstream_result_too_large_for_inputs_fails_the_stage_once(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    homes = {"n1": prepare_home("n1", functions={**FUNCS, "emit": EMIT}, readings=False)}
    stages = [stage("a", "emit"), stage("b", "fb", ["a"])]

    async def main() -> None:
        async with harness(nats_server) as h, agents(nats_server, homes) as ags:
            plan = make_plan("garbage", stages, {"a": "n1", "b": "n1"})
            await h.put_plan(plan)
            bad = ("big1", "deep1", "wide1")
            for r in (*bad, "ok1"):
                await h.trigger(plan, r)
            for r in bad:
                ev = await h.events.wait("b failed", run=r, stage="b", status="failed")
                assert ev.error_kind == "TaskValidationError", ev
                assert ev.error and "stage b cannot run: invalid task: " in ev.error, ev.error
            fin = await h.events.wait("finale", run="ok1", stage="b", status="done")
            assert fin.result is not None and fin.result["v"] == 2
            # failed once each, not retried: the failures are final
            assert all(len(h.events.of(run=r, stage="b")) == 1 for r in bad)
            assert ags["n1"].pipelines.counters["failed"] == len(bad)

    run(main(), timeout=240)


def test_a_stage_reading_data_its_tenant_may_not_read_fails_once(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    policy = {"tenants": {TENANT: {"locations": "*", "sensor_types": ["temperature"]}}}
    homes = {"n1": prepare_home("n1", functions=FUNCS, readings=False, policy=policy)}
    co2 = [{"name": "t", "select": {"location": "room1", "sensor_type": "co2"}}]
    temp = [
        {"name": "t", "select": {"location": "room1", "sensor_type": "temperature"},
         "allow_empty": True}
    ]  # fmt: skip

    async def main() -> None:
        async with harness(nats_server) as h, agents(nats_server, homes) as ags:
            bad = make_plan("peek", [stage("a", "fa", data=co2)], {"a": "n1"})
            good = make_plan("fine", [stage("a", "fa", data=temp)], {"a": "n1"})
            await h.put_plan(bad)
            await h.put_plan(good)
            await h.trigger(bad, "r1")
            ev = await h.events.wait("denied", pipeline="peek", run="r1", status="failed")
            assert ev.error_kind == "AccessDenied" and ev.error and "co2" in ev.error, ev
            await h.trigger(good, "r1")
            await h.events.wait("allowed", pipeline="fine", run="r1", status="done")
            assert len(h.events.of(pipeline="peek", run="r1")) == 1
            assert ags["n1"].pipelines.counters["failed"] == 1

    run(main(), timeout=240)
