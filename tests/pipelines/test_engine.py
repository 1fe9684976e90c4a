"""The node's pipeline engine against a real nats-server, real NodeAgents (real wasmtime,
real SQLite). No controller: the tests write Plans into ``fades_plans`` themselves, start
runs with TRIGGER bundles and read the stage events from ``FADES_PEVENTS``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from tests.waiting import await_until as wait_for

from fades.aiostop import wait_for as within
from fades.bus.nats import NatsBus
from fades.fabric import EmbeddedNats, FabricSettings
from fades.node.agent import NodeAgent
from fades.pipelines.bundles import BundleIO
from fades.pipelines.protocol import (
    EVENTS_STREAM,
    PLANS_BUCKET,
    SINGLE,
    TRIGGER,
    Assignment,
    Bundle,
    Plan,
    StageEvent,
    ensure_events_stream,
)
from fades.pipelines.spec import PipelineSpec

MEM = 32
TENANT = "facilities"

#: stage functions: each sees its upstream stages' values as data[<stage>]
FUNCS = {
    "fa": """
def main(data, params):
    return {"v": 1, "run": data["_pipeline"]["run"]}
""",
    "fb": """
def main(data, params):
    return {"v": data["a"]["v"] + 1, "node": data["_pipeline"]["node"]}
""",
    "fc": """
def main(data, params):
    return {"v": data["b"]["v"] * 10, "run": data["_pipeline"]["run"]}
""",
}


def run(coro: Any, timeout: float = 300) -> Any:
    return asyncio.run(within(coro, timeout))


def stage(name: str, fn: str, after: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "function": {"artifact": fn, "memory_mib": MEM, **kw.pop("function", {})},
        "after": after or [],
        **kw,
    }


def make_plan(
    name: str,
    stages: list[dict[str, Any]],
    where: dict[str, str | list[str]],
    *,
    version: int = 1,
    run: dict[str, Any] | None = None,
    queue: dict[str, Any] | None = None,
    priority: int = 5,
    modes: dict[tuple[str, str], str] | None = None,
) -> Plan:
    """A plan: ``where`` maps a stage to its node, or to a list of nodes (scattered, one
    instance per node)."""
    spec = PipelineSpec.model_validate(
        {
            "name": name,
            "credentials": {"tenant": TENANT, "priority": priority},
            "stages": stages,
            "run": run or {},
            "queue": queue or {},
        }
    )
    assignments = []
    for st, nodes in where.items():
        if isinstance(nodes, list):
            for n in nodes:
                mode = (modes or {}).get((st, n), "run")
                assignments.append(Assignment(stage=st, instance=n, node=n, mode=mode))  # type: ignore[arg-type]
        else:
            mode = (modes or {}).get((st, SINGLE), "run")
            assignments.append(Assignment(stage=st, node=nodes, mode=mode))  # type: ignore[arg-type]
    return Plan(
        pipeline=name,
        tenant=TENANT,
        version=version,
        spec=spec.to_dict(),
        assignments=assignments,
        submitted_at=time.time(),
    )


class Events:
    """The stage events of the test, from a durable consumer on FADES_PEVENTS."""

    def __init__(self, bus: NatsBus) -> None:
        self.bus = bus
        self.seen: list[StageEvent] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Events:
        await ensure_events_stream(self.bus)
        self._task = asyncio.create_task(self._loop())
        return self

    async def _loop(self) -> None:
        async for d in self.bus.consume(EVENTS_STREAM, "test-events", "fades.pevent.>"):
            self.seen.append(StageEvent.decode(d.data))
            await d.ack()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def of(self, run: str | None = None, stage: str | None = None, status: str | None = None,
           pipeline: str | None = None) -> list[StageEvent]:  # fmt: skip
        return [
            e
            for e in self.seen
            if (run is None or e.run == run)
            and (pipeline is None or e.pipeline == pipeline)
            and (stage is None or e.stage == stage)
            and (status is None or e.status == status)
        ]

    async def wait(self, what: str, timeout: float = 60.0, **kw: Any) -> StageEvent:
        await wait_for(lambda: self.of(**kw), timeout, f"{what}: {kw}; seen {self.brief()}")
        return self.of(**kw)[0]

    def brief(self) -> list[tuple[str, str, str, str]]:
        return [(e.run, e.stage, e.instance, e.status) for e in self.seen]


class Harness:
    """A test client on the fabric: writes plans, starts runs, reads events."""

    def __init__(self, bus: NatsBus, events: Events) -> None:
        self.bus = bus
        self.events = events
        self.io = BundleIO(bus)

    async def put_plan(self, plan: Plan) -> None:
        await self.io.ensure(plan)
        kv = await self.bus.kv(PLANS_BUCKET)
        await kv.put(plan.pipeline, plan.encode())

    async def trigger(self, plan: Plan, run: str, value: Any = None) -> None:
        """Start one run: a TRIGGER bundle to every instance of every start stage."""
        spec = PipelineSpec.model_validate(plan.spec)
        now = time.time()
        for st in spec.stages:
            if st.after:
                continue
            for a in plan.instances(st.name):
                b = Bundle(pipeline=plan.pipeline, plan_version=plan.version, run=run,
                           stage=st.name, instance=a.instance, from_stage=TRIGGER,
                           producer=TRIGGER, run_started_at=now, sent_at=now)  # fmt: skip
                await self.io.send(b, value)


@asynccontextmanager
async def harness(server: EmbeddedNats) -> AsyncIterator[Harness]:
    bus = await NatsBus.connect(server.url, name="test-harness", timeout=20)
    events = await Events(bus).start()
    try:
        yield Harness(bus, events)
    finally:
        await events.stop()
        await bus.close()


@asynccontextmanager
async def agents(
    server: EmbeddedNats, homes: dict[str, Path], **kw: Any
) -> AsyncIterator[dict[str, NodeAgent]]:
    async with AsyncExitStack() as stack:
        out: dict[str, NodeAgent] = {}
        for name, home in homes.items():
            agent = NodeAgent(
                name, home, FabricSettings(server.url), heartbeat_s=0.5, ingest=False, **kw
            )
            await agent.start()
            stack.push_async_callback(agent.stop)
            out[name] = agent
        yield out


def chain(name: str = "abc") -> list[dict[str, Any]]:
    return [stage("a", "fa"), stage("b", "fb", ["a"]), stage("c", "fc", ["b"])]


# --- tests -------------------------------------------------------------------------------------
def test_chain_across_two_nodes_delivers_the_finale_once_with_timing(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    homes = {n: prepare_home(n, functions=FUNCS, readings=False) for n in ("n1", "n2")}

    async def main() -> None:
        async with harness(nats_server) as h, agents(nats_server, homes) as ags:
            plan = make_plan("abc", chain(), {"a": "n1", "b": "n2", "c": "n1"})
            await h.put_plan(plan)
            for i in range(3):
                await h.trigger(plan, f"r{i}")
            for i in range(3):
                fin = await h.events.wait("finale", run=f"r{i}", stage="c", status="done")
                assert fin.result == {"v": 20, "run": f"r{i}"}
                assert fin.role == "finale" and fin.node == "n1"
                assert {"hop", "compute", "total"} <= set(fin.timing)
            b = h.events.of(run="r0", stage="b", status="done")[0]
            assert b.node == "n2" and b.role == "midsection" and b.bytes_in > 0
            # another pipeline with the same run ids is not mistaken for a duplicate
            other = make_plan("abd", chain(), {"a": "n1", "b": "n2", "c": "n1"})
            await h.put_plan(other)
            await h.trigger(other, "r0")
            await h.events.wait("other finale", run="r0", stage="c", pipeline="abd")
            await asyncio.sleep(1.0)  # nothing more arrives: no duplicate finale
            assert all(len(h.events.of(run=f"r{i}", stage="c", pipeline="abc")) == 1
                       for i in range(3))  # fmt: skip
            assert ags["n1"].pipelines.counters["executed"] == 8
            # stage tasks are not controller tasks: nothing went to the results stream
            assert ags["n1"].counters["published"] == 0

    run(main())


def test_a_redelivered_bundle_reuses_the_stage_task_and_duplicates_no_finale(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    homes = {n: prepare_home(n, functions=FUNCS, readings=False) for n in ("n1", "n2")}

    async def main() -> None:
        async with harness(nats_server) as h:
            plan = make_plan("abc", chain(), {"a": "n1", "b": "n2", "c": "n1"})
            await h.put_plan(plan)
            async with agents(nats_server, homes):
                await h.trigger(plan, "r0")
                await h.events.wait("finale", run="r0", stage="c", status="done")
            # the same bundle for b again (as after a crash that lost its ack), under another
            # message id so the stream's de-duplication does not hide it; a fresh agent (no
            # memory of the run) must find the stage task and reuse it
            now = time.time()
            again = Bundle(pipeline="abc", plan_version=1, run="r0", stage="b", from_stage="a",
                           producer=SINGLE, run_started_at=now, sent_at=now)  # fmt: skip
            await h.bus.publish("fades.bundle.abc.b._", again.model_copy(
                update={"value": {"v": 1, "run": "r0"}}).encode(), msg_id="replayed")  # fmt: skip
            async with agents(nats_server, homes) as ags:
                await wait_for(lambda: ags["n2"].pipelines.counters["reused"] == 1, 30, "reuse")
                await h.trigger(plan, "r1")  # and the pipeline carries on
                await h.events.wait("finale", run="r1", stage="c", status="done")
                assert ags["n2"].pipelines.counters["executed"] == 1  # r1 only
            assert len(h.events.of(run="r0", stage="c")) == 1
            assert len(h.events.of(run="r0", stage="b", status="done")) == 1

    run(main())


def test_bundles_survive_a_restart_of_the_consumer_node_and_of_nats(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    homes = {n: prepare_home(n, functions=FUNCS, readings=False) for n in ("n1", "n2")}

    async def main() -> None:
        plan = make_plan("abc", chain(), {"a": "n1", "b": "n2", "c": "n1"})
        async with harness(nats_server) as h:
            await h.put_plan(plan)
            async with agents(nats_server, {"n1": homes["n1"]}):  # n2 is down
                await h.trigger(plan, "r0")
                await h.events.wait("a done", run="r0", stage="a", status="done")
        nats_server.stop()  # the bundle for b waits in the stream, on disk
        nats_server.start()
        async with harness(nats_server) as h, agents(nats_server, homes):
            fin = await h.events.wait("finale", run="r0", stage="c", status="done")
            assert fin.result == {"v": 20, "run": "r0"}

    run(main())


HOSTILE = """
def main(data, params):
    how = data["_pipeline"]["run"]
    if how.startswith("loop"):
        while True:
            pass
    if how.startswith("bomb"):
        hog = []
        while True:
            hog.append(bytearray(1 << 20))
    return {"v": data["a"]["v"] + 1}
"""


def test_a_hostile_stage_fails_its_run_and_the_next_run_succeeds(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    homes = {"n1": prepare_home("n1", functions={**FUNCS, "hostile": HOSTILE}, readings=False)}
    stages = [
        stage("a", "fa"),
        stage("b", "hostile", ["a"], function={"time_budget_ms": 1000}),
        stage("c", "fc", ["b"]),
    ]

    async def main() -> None:
        async with harness(nats_server) as h, agents(nats_server, homes):
            plan = make_plan("hostile", stages, {"a": "n1", "b": "n1", "c": "n1"})
            await h.put_plan(plan)
            for r in ("loop1", "bomb1", "ok1"):
                await h.trigger(plan, r)
            for r in ("loop1", "bomb1"):
                ev = await h.events.wait("failed", run=r, stage="b", status="failed")
                assert ev.error_kind and ev.error
            fin = await h.events.wait("finale", run="ok1", stage="c", status="done")
            assert fin.result["v"] == 20
            assert not h.events.of(run="loop1", stage="c")

    run(main())


GUARDED = {
    **FUNCS,
    "fe": """
def main(data, params):
    w = data["w"]
    return {"w_ran": bool(w), "why": getattr(w, "reason", None)}
""",
}


def test_a_false_guard_skips_the_stage_and_downstream_sees_skipped(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    homes = {"n1": prepare_home("n1", functions=GUARDED, readings=False)}
    stages = [
        stage("a", "fa"),
        stage("w", "fb", ["a"], when="v > 5"),
        stage("e", "fe", ["w"]),
    ]

    async def main() -> None:
        async with harness(nats_server) as h, agents(nats_server, homes) as ags:
            plan = make_plan("guarded", stages, {"a": "n1", "w": "n1", "e": "n1"})
            await h.put_plan(plan)
            await h.trigger(plan, "r0")
            fin = await h.events.wait("finale", run="r0", stage="e", status="done")
            ev = h.events.of(run="r0", stage="w")[0]
            assert ev.status == "skipped" and "v > 5" in (ev.error or "")
            assert fin.result["w_ran"] is False and "v > 5" in fin.result["why"]
            assert ags["n1"].pipelines.counters["handovers"] == 2  # all in process

    run(main())


GATHER = {
    "scan": """
def main(data, params):
    return {"node": data["_pipeline"]["node"], "rows": len(data["t"])}
""",
    "merge": """
def main(data, params):
    parts = data["scan"]  # {instance: value}; a missing one is {"__fades_skipped__": why}
    gone = sorted(k for k, v in parts.items() if "__fades_skipped__" in v)
    return {"have": sorted(k for k in parts if k not in gone), "missing": gone}
""",
}


def test_scatter_and_gather_with_a_timeout_passes_the_missing_as_skipped(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    homes = {n: prepare_home(n, functions=GATHER) for n in ("n1", "n2", "n3")}
    data = [{"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}}]
    stages = [
        stage("scan", "scan", data=data, scatter=True),
        stage("merge", "merge", ["scan"], gather={"timeout_s": 2}),
    ]

    async def main() -> None:
        async with harness(nats_server) as h, agents(nats_server, homes):
            # n3's instance waits (its node is "down"): the gather times out without it
            plan = make_plan("scatter", stages, {"scan": ["n1", "n2", "n3"], "merge": "n1"},
                             modes={("scan", "n3"): "wait"})  # fmt: skip
            await h.put_plan(plan)
            await h.trigger(plan, "r0")
            fin = await h.events.wait("finale", run="r0", stage="merge", status="done")
            assert fin.result == {"have": ["n1", "n2"], "missing": ["n3"]}
            assert {e.node for e in h.events.of(run="r0", stage="scan", status="done")} == {
                "n1",
                "n2",
            }

    run(main())
