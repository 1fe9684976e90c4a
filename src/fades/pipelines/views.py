"""What the API shows of pipelines: the list, a pipeline's status (plan, run counts, queue
depths), its runs, and one run's timeline (a mixin of
:class:`~fades.pipelines.service.PipelineService`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from fades.aiostop import wait_for
from fades.controller.pipestore import RUN_ENDED, PipelineRow, PipelineStore
from fades.errors import PipelineNotFound
from fades.pipelines.protocol import Plan, bundle_durable, bundle_stream
from fades.pipelines.sites import pipeline_bus, queue_place, site_reachable
from fades.pipelines.spec import PipelineSpec

if TYPE_CHECKING:
    from fades.controller.service import Controller

#: most runs one listing returns
MAX_RUNS_LISTED = 10_000


class Views:
    """The read side of the pipeline service."""

    controller: Controller
    plans: dict[str, tuple[Plan, int]]

    @property
    def store(self) -> PipelineStore:
        raise NotImplementedError

    def node_sites(self) -> dict[str, str | None]:
        """Every known node's site (None: no site), up or down."""
        reg = self.controller.registry
        return {e.info.name: e.info.site for e in [*reg.up(), *reg.down()]}

    def queue_at(self, plan: Plan) -> dict[str, Any]:
        """Where ``plan``'s bundle queue lives and whether it survives an uplink cut; for a
        site pipeline also whether the controller reaches the site now."""
        out = queue_place(plan, self.node_sites())
        if plan.domain is not None:
            out["reachable"] = self.site_up(plan)
            if not out["reachable"]:
                out["where"] += (
                    f"; no node of site {plan.domain} is up as the controller sees it (the "
                    "site or its uplink is down): what it runs meanwhile is reported when "
                    "the link returns"
                )
        return out

    def site_up(self, plan: Plan) -> bool:
        return site_reachable(plan, [e.info for e in self.controller.registry.up()])

    async def row(self, name: str, tenant: str) -> PipelineRow:
        row = await asyncio.to_thread(self.store.get, name)
        if row is None or row.tenant != tenant:
            raise PipelineNotFound(f"no pipeline {name!r}", pipeline=name)
        return row

    async def list_pipelines(self, tenant: str) -> list[dict[str, Any]]:
        out = []
        for row in await asyncio.to_thread(self.store.pipelines, tenant):
            counts = await asyncio.to_thread(self.store.counts, row.name)
            plan = self.plans.get(row.name)
            out.append(
                {
                    "pipeline": row.name,
                    "state": plan[0].state if plan else row.state,
                    "version": plan[0].version if plan else None,
                    "mode": row.spec.get("run", {}).get("mode"),
                    "stages": len(row.spec.get("stages", [])),
                    "submitted_at": row.submitted_at,
                    "runs": counts,
                }
            )
        return out

    async def status(self, name: str, tenant: str) -> dict[str, Any]:
        """The plan (each stage's node and mode), run counts, and queue depths."""
        row = await self.row(name, tenant)
        counts = await asyncio.to_thread(self.store.counts, name)
        cached = self.plans.get(name)
        body: dict[str, Any] = {
            "pipeline": name,
            "tenant": row.tenant,
            "state": cached[0].state if cached else row.state,
            "reason": row.reason,
            "submitted_at": row.submitted_at,
            "ends_at": row.ends_at,
            "runs": {s: counts.get(s, 0) for s in ("running", *RUN_ENDED)},
            "queue": row.spec.get("queue", {}),
        }
        if cached is not None:
            plan = cached[0]
            spec = PipelineSpec.model_validate(plan.spec)
            stream = bundle_stream(name)
            bus = pipeline_bus(self.controller.bus, plan)
            queues = []
            reachable = self.site_up(plan)
            for a in plan.assignments:
                depth = None
                with contextlib.suppress(Exception):
                    if reachable:  # (an unreachable site's queue would only time out)
                        depth = await wait_for(
                            bus.pending(stream, bundle_durable(a.stage, a.instance)), 2.0
                        )
                queues.append(
                    {"stage": a.stage, "instance": a.instance, "node": a.node, "mode": a.mode}
                    | {"queued": depth}
                )
            plan_rows = rows(plan, spec)
            body |= {"version": plan.version, "plan": plan_rows, "queues": queues}
            body["queue_at"] = self.queue_at(plan)
        body["failovers"] = [
            {"version": v, "at": at, "moved": what}
            for p, v, at, what in self.failover_log()
            if p == name
        ][-20:]
        return body

    def failover_log(self) -> list[tuple[str, int, float, str]]:
        """(pipeline, new version, epoch seconds, what moved) per re-plan since the start."""
        return []

    async def runs(self, name: str, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        await self.row(name, tenant)
        limit = max(1, min(limit, MAX_RUNS_LISTED))
        return [r.to_dict() for r in await asyncio.to_thread(self.store.runs, name, limit)]

    async def timeline(self, name: str, run: str, tenant: str) -> dict[str, Any]:
        """One run and each stage instance's node, queue, start, compute, hop, bytes."""
        await self.row(name, tenant)
        rec = await asyncio.to_thread(self.store.run, name, run)
        if rec is None:
            raise PipelineNotFound(f"pipeline {name!r} has no run {run!r}", pipeline=name)
        events = await asyncio.to_thread(self.store.timeline, name, run)
        stages = []
        for ev in events:
            t = ev.timing
            stages.append(
                {
                    "stage": ev.stage,
                    "instance": ev.instance,
                    "role": ev.role,
                    "node": ev.node,
                    "status": ev.status,
                    "at": ev.at,
                    "since_start_s": max(0.0, ev.at - rec.started_at),
                    "queue_s": t.get("queue"),
                    "start_s": t.get("start"),
                    "compute_s": t.get("compute"),
                    "hop_s": t.get("hop"),
                    "total_s": t.get("total"),
                    "bytes_in": ev.bytes_in,
                    "bytes_out": ev.bytes_out,
                    "error_kind": ev.error_kind,
                    "error": ev.error,
                }
            )
        return rec.to_dict() | {"stages": stages}

    async def wait_run(self, name: str, run: str, timeout: float) -> str | None:
        """The run's status once it ended, or as it stands after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            rec = await asyncio.to_thread(self.store.run, name, run)
            status = rec.status if rec else None
            if status is None or status in RUN_ENDED or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(0.1)


def rows(plan: Plan, spec: PipelineSpec) -> list[dict[str, Any]]:
    """The plan as table rows (stage, role, instance, node, mode, reason, after)."""
    from fades.pipelines.planner import plan_rows

    return [dict(r) for r in plan_rows(plan, spec)]
