"""The controller's side of pipelines over its real HTTP API, a real nats-server and real
registry entries: refusals naming the stage, submit (pinned functions, plan in the KV,
trigger bundles), runs and timelines from stage events (each recorded once), cancel, and
failover re-planning when a node stops heartbeating.

Nodes here are registry entries (:class:`Registration`): the events a node's engine would
publish are put on the events stream by the test (the wire, not a second engine).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from tests.waiting import wait_until as wait_for

from controller.conftest import CORE_WASM, FACILITIES, VISITOR, Bed, held  # type: ignore[import-not-found]
from fades.bus.nats import NatsBus
from fades.errors import NameTaken, PipelineExists, PipelineNotFound, PipelineValidationError
from fades.functions.artifact import create
from fades.functions.keys import SigningKey
from fades.pipelines.protocol import (
    PLANS_BUCKET,
    TRIGGER,
    Bundle,
    Plan,
    StageEvent,
    bundle_durable,
    bundle_stream,
    bundle_subject,
    events_subject,
)


def raw(bed: Bed, method: str, path: str, token: str | None = FACILITIES, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, bed.url + path, headers=headers, timeout=30, **kw)


def up(bed: Bed, *names: str) -> None:
    with bed.client() as c:
        wait_for(lambda: set(names) <= {n["name"] for n in c.nodes() if n["up"]}, what="nodes")


def chain(name: str = "chain", runs: int = 2, **run: Any) -> dict[str, Any]:
    """read room1 (n1) -> read room2 (n2) -> report (no data)."""
    return {
        "name": name,
        "credentials": {"tenant": "facilities", "priority": 6},
        "run": {"mode": "on-demand", "runs": runs, **run},
        "queue": {"max_runs": 50, "when_full": "refuse"},
        "stages": [
            {
                "name": "a",
                "function": {"artifact": "f"},
                "data": [{"name": "t", "select": {"location": "room1"}}],
            },
            {
                "name": "b",
                "after": ["a"],
                "function": {"artifact": "f"},
                "data": [{"name": "t", "select": {"location": "room2"}}],
            },
            {"name": "c", "after": ["b"], "function": {"artifact": "f"}},
        ],
    }


def cluster(bed: Bed, signing_key: SigningKey, **kw: Any) -> None:
    bed.start_controller(**kw)
    bed.register("n1", [held("room1")])
    bed.register("n2", [held("room2")])
    up(bed, "n1", "n2")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())


async def _plan(url: str, name: str) -> Plan:
    bus = await NatsBus.connect(url, name="test-plans")
    try:
        entry = await (await bus.kv(PLANS_BUCKET)).get(name)
        assert entry is not None
        plan: Plan = Plan.decode(entry.value)
        return plan
    finally:
        await bus.close()


async def _take(url: str, pipeline: str, stage: str, n: int) -> list[Bundle]:
    """Take ``n`` bundles for ``stage`` from its durable, as the node's engine would."""
    bus = await NatsBus.connect(url, name="test-take")
    out: list[Bundle] = []
    try:
        it = bus.consume(
            bundle_stream(pipeline), bundle_durable(stage), bundle_subject(pipeline, stage)
        )
        async for d in it:
            out.append(Bundle.decode(d.data))
            await d.ack()
            if len(out) == n:
                break
    finally:
        await bus.close()
    return out


async def _events(url: str, events: list[StageEvent]) -> None:
    bus = await NatsBus.connect(url, name="test-events")
    try:
        for ev in events:
            # no message id: a redelivered event reaches the controller again
            await bus.publish(events_subject(ev.pipeline), ev.encode())
    finally:
        await bus.close()


def event(run: str, stage: str, status: str, **kw: Any) -> StageEvent:
    role = {"a": "start", "c": "finale"}.get(stage, "midsection")
    return StageEvent(
        pipeline="chain",
        run=run,
        stage=stage,
        node={"a": "n1"}.get(stage, "n2"),
        status=status,  # type: ignore[arg-type]
        role=role,  # type: ignore[arg-type]
        timing={"queue": 0.001, "start": 0.002, "compute": 0.003, "hop": 0.0005, "total": 0.01},
        bytes_in=10,
        bytes_out=20,
        run_started_at=time.time() - 0.05,
        at=time.time(),
        **kw,
    )


def test_malformed_specs_are_refused_naming_the_stage_and_the_controller_keeps_serving(
    bed: Bed, signing_key: SigningKey
) -> None:
    cluster(bed, signing_key)
    cycle = chain()
    cycle["stages"][0]["after"] = ["c"]
    unknown = chain()
    unknown["stages"][1]["function"]["artifact"] = "nope"
    guard = chain()
    guard["stages"][2]["when"] = "ice == = true"
    nowhere = chain()
    nowhere["stages"][1]["data"][0]["select"]["location"] = "mars"
    cases = [
        (cycle, "a -> "),
        (unknown, "stages.b.function.artifact"),
        (guard, "stages.c.when"),
        (nowhere, "'b'"),
    ]
    for spec, named in cases:
        for path in ("/v1/pipelines/plan", "/v1/pipelines"):
            resp = raw(bed, "POST", path, json=spec)
            assert resp.status_code == 422, (path, resp.text)
            body = resp.json()
            text = body["detail"] + " ".join(p["field"] for p in body.get("problems", []))
            assert named in text, (named, body)
    with bed.client() as c:
        with pytest.raises(PipelineValidationError) as info:
            c.plan_pipeline(unknown)
        assert "stages.b.function.artifact" in dict(info.value.problems)
        assert c.pipelines() == []  # nothing deployed
        # a good request after the bad ones
        rows = c.plan_pipeline(chain())["rows"]
    assert [(r["stage"], r["node"], r["role"]) for r in rows] == [
        ("a", "n1", "start"),
        ("b", "n2", "midsection"),
        ("c", "n2", "finale"),
    ]
    assert all(r["reason"] for r in rows)
    # the wrong tenant, a non-object body
    assert raw(bed, "POST", "/v1/pipelines", token=VISITOR, json=chain()).status_code == 403
    assert raw(bed, "POST", "/v1/pipelines", content=b"[1]").status_code == 400
    assert raw(bed, "GET", "/v1/pipelines/none").status_code == 404


def test_submit_pins_plans_triggers_and_records_runs_once_from_events(
    bed: Bed, signing_key: SigningKey
) -> None:
    cluster(bed, signing_key)
    with bed.client() as c:
        receipt = c.submit_pipeline(chain(runs=2))
        assert receipt["runs"] == ["r000001", "r000002"] and receipt["version"] == 1
        plan = bed.run(_plan(bed.nats.url, "chain"))
        arts = {s["name"]: s["function"]["artifact"] for s in plan.spec["stages"]}
        assert all(a.startswith("sha256:") for a in arts.values())  # pinned at submit
        assert {a.stage: a.node for a in plan.assignments} == {"a": "n1", "b": "n2", "c": "n2"}
        triggers = bed.run(_take(bed.nats.url, "chain", "a", 2))
        assert sorted(b.run for b in triggers) == ["r000001", "r000002"]
        assert {(b.from_stage, b.priority) for b in triggers} == {(TRIGGER, 6)}

        with pytest.raises(PipelineExists, match=r"submit it again with --replace"):
            c.submit_pipeline(chain())
        visitor = chain()
        visitor["credentials"]["tenant"] = "visitor"
        with bed.client(VISITOR) as v, pytest.raises(NameTaken):
            v.submit_pipeline(visitor)
        with bed.client(VISITOR) as v, pytest.raises(PipelineNotFound):
            v.pipeline("chain")  # another tenant's pipeline does not exist for it

        done = [event("r000001", s, "done") for s in "abc"]
        done[2] = done[2].model_copy(update={"result": {"ok": 1}})
        failed = [
            event("r000002", "a", "done"),
            event("r000002", "b", "failed", error_kind="MemoryLimitExceeded", error="64 MiB"),
        ]
        # every event twice: delivered at least once, recorded once
        bed.run(_events(bed.nats.url, done + done + failed + failed))
        r1 = c.pipeline_run("chain", "r000001", wait=30)
        assert r1["status"] == "done" and r1["results"] == {"c": {"ok": 1}}
        assert [(s["stage"], s["node"], s["status"]) for s in r1["stages"]] == [
            ("a", "n1", "done"),
            ("b", "n2", "done"),
            ("c", "n2", "done"),
        ]
        assert r1["stages"][0]["compute_s"] == pytest.approx(0.003)
        assert r1["stages"][0]["bytes_out"] == 20
        r2 = c.pipeline_run("chain", "r000002", wait=30)
        assert r2["status"] == "failed"
        assert "stage b failed on n2: MemoryLimitExceeded" in r2["reason"]
        assert ctl_finales(bed, "chain", "r000001") == 1

        status = c.pipeline("chain")
        assert status["state"] == "active" and status["runs"]["done"] == 1
        assert status["runs"]["failed"] == 1
        first_row = status["plan"][0]
        assert (first_row["stage"], first_row["node"], first_row["mode"]) == ("a", "n1", "run")
        assert {q["stage"] for q in status["queues"]} == {"a", "b", "c"}
        assert [p["pipeline"] for p in c.pipelines()] == ["chain"]
        assert [r["run"] for r in c.pipeline_runs("chain")] == ["r000002", "r000001"]
        metrics = httpx.get(bed.url + "/metrics").text
        assert 'fades_pipeline_runs_total{status="done"} 1.0' in metrics
        assert 'fades_pipeline_stage_events_total{status="done"} 4.0' in metrics

        more = c.start_runs("chain", 3)
        assert more["runs"] == ["r000003", "r000004", "r000005"]
        assert c.cancel_pipeline("chain")["state"] == "cancelled"
        assert bed.run(_plan(bed.nats.url, "chain")).state == "cancelled"
        assert {r["status"] for r in c.pipeline_runs("chain")[:3]} == {"cancelled"}
        with pytest.raises(PipelineNotFound, match="not active"):
            c.start_runs("chain")
        # resubmitting a cancelled pipeline: a new version, run ids never reused
        again = c.submit_pipeline(chain(runs=1))
        assert again["version"] == 2 and again["runs"] == ["r000006"]


def ctl_finales(bed: Bed, name: str, run: str) -> int:
    assert bed.controller is not None
    n: int = bed.controller.pipelines.store.finale_count(name, run)
    return n


def test_a_run_past_its_deadline_fails_with_the_stages_it_waited_on(
    bed: Bed, signing_key: SigningKey
) -> None:
    cluster(bed, signing_key)
    with bed.client() as c:
        c.submit_pipeline(chain(runs=1, run_deadline_s=0.5))
        bed.run(_events(bed.nats.url, [event("r000001", "a", "done")]))
        info = wait_for(
            lambda: (r := c.pipeline_run("chain", "r000001"))["status"] != "running" and r,
            what="the deadline",
        )
    assert info["status"] == "failed"
    assert "run deadline of 0.5 s passed; still waiting on b, c" in info["reason"]


def test_a_node_that_stops_heartbeating_is_replanned_within_the_down_detection_time(
    bed: Bed, signing_key: SigningKey
) -> None:
    down_after = 2.0
    bed.start_controller(down_after=down_after)
    regs = {
        "n1": bed.register("n1", [held("room1")]),
        "n2": bed.register("n2", [held("room2")]),
        "n3": bed.register("n3", [held("room1")]),
    }
    up(bed, "n1", "n2", "n3")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        spec = chain(runs=1)
        spec["stages"][1]["failover"] = "wait"
        c.submit_pipeline(spec)
        first = bed.run(_plan(bed.nats.url, "chain"))
        a_node = next(a.node for a in first.assignments if a.stage == "a")
        other = "n3" if a_node == "n1" else "n1"
        killed_at = time.time()
        bed.run(regs[a_node].pause())  # silent, as a SIGKILLed node
        moved = wait_for(
            lambda: (p := bed.run(_plan(bed.nats.url, "chain"))).version > 1 and p,
            timeout=down_after + 10,
            what="the re-plan",
        )
        took = time.time() - killed_at
        a = next(x for x in moved.assignments if x.stage == "a")
        assert (a.node, a.mode) == (other, "run") and a_node in a.reason
        assert took < down_after + 0.2 + 2.0, took  # heartbeat age + sweep + a loaded machine
        status = c.pipeline("chain")
        assert status["plan"][0]["node"] == other
        assert status["failovers"][0]["version"] == 2 and other in status["failovers"][0]["moved"]
        # b waits for n2 (failover: wait), and gets it back when n2 returns
        bed.run(regs["n2"].pause())
        waited = wait_for(
            lambda: any(
                x.stage == "b" and x.mode == "wait"
                for x in bed.run(_plan(bed.nats.url, "chain")).assignments
            ),
            timeout=down_after + 10,
            what="b waiting",
        )
        assert waited
        bed.run(_resume(regs["n2"]))  # heartbeats again
        back = wait_for(
            lambda: [
                x
                for x in bed.run(_plan(bed.nats.url, "chain")).assignments
                if x.stage == "b" and x.mode == "run" and x.node == "n2"
            ],
            timeout=20,
            what="b back on n2",
        )
        assert back
    metrics = httpx.get(bed.url + "/metrics").text
    assert "fades_pipeline_failovers_total 3.0" in metrics


async def _resume(reg: Any) -> None:
    await reg.beat()
    reg._beats = asyncio.create_task(reg._loop())


def test_a_full_queue_refuses_runs_and_says_so(bed: Bed, signing_key: SigningKey) -> None:
    cluster(bed, signing_key)
    spec = chain(runs=3)
    spec["queue"] = {"max_runs": 2, "when_full": "refuse"}
    with bed.client() as c:
        receipt = c.submit_pipeline(spec)  # no engine consumes: the triggers stay queued
        assert receipt["runs"] == ["r000001", "r000002"] and receipt["refused"] == 1
        assert "queue of pipeline 'chain' is full (max_runs 2" in receipt["detail"]
        dropped = c.pipeline_run("chain", "r000003")
        assert dropped["status"] == "dropped" and "refused" in dropped["reason"]
        assert c.pipeline("chain")["runs"]["dropped"] == 1
        assert c.pipelines()[0]["state"] == "active"  # the pipeline itself carries on
        # replacing the active pipeline: a new version of the plan; its runs number on
        spec["queue"] = {"max_runs": 10, "when_full": "refuse"}
        again = c.submit_pipeline(spec, replace=True)
        assert again["version"] == 2 and again["runs"] == ["r000004", "r000005", "r000006"]
        assert bed.run(_plan(bed.nats.url, "chain")).version == 2
    assert "fades_pipeline_drops_total 1.0" in httpx.get(bed.url + "/metrics").text


def test_a_pipeline_ends_at_its_end_and_events_sent_while_the_controller_was_down_count(
    bed: Bed, signing_key: SigningKey
) -> None:
    cluster(bed, signing_key)
    with bed.client() as c:
        c.submit_pipeline(chain(runs=1, for_s=3))
    bed.stop_controller()
    done = [event("r000001", s, "done") for s in "abc"]
    bed.run(_events(bed.nats.url, done))  # they wait, durable, in the events stream
    bed.start_controller()
    with bed.client() as c:
        assert c.pipeline_run("chain", "r000001", wait=30)["status"] == "done"
        info = wait_for(
            lambda: (s := c.pipeline("chain"))["state"] == "finished" and s,
            timeout=30,
            what="the end",
        )
        assert "reached its end" in info["reason"]
    assert bed.run(_plan(bed.nats.url, "chain")).state == "finished"


async def _queued(url: str, pipeline: str) -> int:
    bus = await NatsBus.connect(url, name="test-queued")
    try:
        n: int = (await bus.js.stream_info(bundle_stream(pipeline))).state.messages
        return n
    finally:
        await bus.close()


def test_runs_recorded_but_not_triggered_before_a_restart_are_triggered_once_after_it(
    bed: Bed, signing_key: SigningKey
) -> None:
    cluster(bed, signing_key)
    with bed.client() as c:
        assert c.submit_pipeline(chain(runs=1))["runs"] == ["r000001"]
    assert bed.controller is not None
    # the controller stops between recording two runs and publishing their triggers
    store = bed.controller.pipelines.store
    assert store.new_runs("chain", 2, time.time()) == ["r000002", "r000003"]
    assert bed.run(_queued(bed.nats.url, "chain")) == 1
    bed.stop_controller()
    bed.start_controller()
    # r000002 and r000003 are triggered; r000001's trigger is not sent twice
    assert bed.run(_queued(bed.nats.url, "chain")) == 3
    triggers = bed.run(_take(bed.nats.url, "chain", "a", 3))
    assert sorted(b.run for b in triggers) == ["r000001", "r000002", "r000003"]
