"""Pipelines at the controller: submit, plan, start runs, cancel, and what the API shows.

:class:`PipelineService` is started by the :class:`~fades.controller.Controller`. A submitted
spec is validated, each stage's function name is pinned to the digest the repository holds
now, the stages are planned onto nodes (:func:`fades.pipelines.planner.plan_pipeline`), the
bundle stream is created with the spec's queue bounds, and the
:class:`~fades.pipelines.protocol.Plan` goes into the KV bucket ``fades_plans`` that the nodes'
engines watch. An on-demand pipeline's runs are started by publishing a *trigger* bundle to
every instance of each start stage (message ids de-duplicate a retried publish).

What happens next is reported by the nodes as stage events; :mod:`fades.pipelines.tracker`
records them, ends runs, and re-plans when a node goes down or comes back;
:mod:`fades.pipelines.views` is what the API shows of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fades.bus.base import DUPLICATE_WINDOW_S
from fades.controller.pipestore import PipelineRow, PipelineStore
from fades.errors import (
    ArtifactError,
    FabricConflict,
    FabricError,
    Forbidden,
    NameTaken,
    PipelineExists,
    PipelineNotFound,
    PipelineValidationError,
    QueueFull,
)
from fades.pipelines.protocol import (
    PLANS_BUCKET,
    TRIGGER,
    Bundle,
    Plan,
    bundle_durable,
    bundle_stream,
    bundle_subject,
    ensure_events_stream,
)
from fades.pipelines.readings import unmatched
from fades.pipelines.sites import pipeline_bus, plan_at_sites
from fades.pipelines.spec import PipelineSpec, parse_pipeline
from fades.pipelines.views import Views, rows

if TYPE_CHECKING:
    from fades.bus.base import KeyValue
    from fades.controller.service import Controller
    from fades.pipelines.tracker import Tracker

log = logging.getLogger("fades.pipelines")

#: triggers are published again after a restart only for runs this much younger than the
#: stream's duplicate window (seconds)
RESUME_MARGIN_S = 60.0
#: most runs one request may start
MAX_RUNS_PER_REQUEST = 10_000


class PipelineService(Views):
    """The controller's side of pipelines (call from the controller's event loop)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._store: PipelineStore | None = None
        self._kv: KeyValue | None = None
        #: pipeline name -> (plan, KV revision): the newest plan this controller wrote or read
        self.plans: dict[str, tuple[Plan, int]] = {}
        self._lock = asyncio.Lock()
        self._tracker: Tracker | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        from fades.pipelines.tracker import Tracker

        bus = self.controller.bus
        self._store = await asyncio.to_thread(PipelineStore, self.controller.home / "controller.db")
        self._store = self.controller.pipeline_store(self._store)  # (several controllers)
        await ensure_events_stream(bus)
        self._kv = await bus.kv(PLANS_BUCKET)
        for key in await self._kv.keys():
            entry = await self._kv.get(key)
            if entry is not None and entry.value:
                with contextlib.suppress(Exception):
                    self.plans[key] = (Plan.decode(entry.value), entry.revision)
        self._tracker = Tracker(self)
        self._tracker.start()
        try:
            await self.resume()
        except FabricError as exc:  # the fabric is down: the deadlines still end them
            log.warning("could not publish unreported runs' triggers again: %s", exc)

    async def stop(self) -> None:
        if self._tracker is not None:
            await self._tracker.stop()
            self._tracker = None
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> PipelineStore:
        if self._store is None:
            raise RuntimeError("the pipeline service is not started")
        return self._store

    def failover_log(self) -> list[tuple[str, int, float, str]]:
        return list(self._tracker.failovers) if self._tracker is not None else []

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("the pipeline service is not started")
        return self._kv

    # --- submit ------------------------------------------------------------------------------
    async def prepare(self, obj: PipelineSpec | Mapping[str, Any], tenant: str) -> PipelineSpec:
        """Validate ``obj``, check its tenant and pin every stage's function to a digest."""
        spec = obj if isinstance(obj, PipelineSpec) else parse_pipeline(dict(obj))
        if spec.tenant != tenant:
            raise Forbidden(
                f"the pipeline is for tenant {spec.tenant!r} but the token belongs to "
                f"tenant {tenant!r}"
            )
        problems: list[tuple[str, str]] = []
        pinned = spec.to_dict()
        for raw, stage in zip(pinned["stages"], spec.stages, strict=True):
            try:
                raw["function"]["artifact"] = await self.controller.publisher.pin(
                    stage.function.artifact
                )
            except ArtifactError as exc:
                problems.append((f"stages.{stage.name}.function.artifact", str(exc)))
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise PipelineValidationError(
                f"invalid pipeline: {problems[0][0]}: {problems[0][1]}{more}", problems=problems
            )
        return parse_pipeline(pinned)

    def plan(self, spec: PipelineSpec) -> Plan:
        """Where each stage would run now, and where its queue lives (the hub, or the site
        every stage is at: :mod:`fades.pipelines.sites`). Raises Unplaceable naming the
        stage."""
        reg = self.controller.registry
        plan: Plan = plan_at_sites(
            spec,
            [e.info for e in reg.up()],
            [e.info for e in reg.down()],
            self.controller.placer,
            now=time.time(),
        )
        return plan

    async def dry_run(self, obj: Mapping[str, Any], tenant: str) -> dict[str, Any]:
        """The plan of ``obj`` and why, without deploying anything."""
        spec = await self.prepare(obj, tenant)
        plan = self.plan(spec)
        return {
            "pipeline": spec.name,
            "rows": rows(plan, spec),
            "ends_at": plan.ends_at,
            "queue_at": self.queue_at(plan),
            "warnings": self.warnings(spec),
        }

    def warnings(self, spec: PipelineSpec) -> list[str]:
        """What will keep a valid pipeline from running as meant, given the nodes now."""
        if not spec.run.on_reading:
            return []
        reg = self.controller.registry
        nodes = [e.info for e in reg.up()] + [e.info for e in reg.down()]
        warning = unmatched(spec.run.on_reading, nodes)
        return [warning] if warning else []

    async def submit(
        self, obj: Mapping[str, Any], tenant: str, *, replace: bool = False
    ) -> dict[str, Any]:
        """Deploy a pipeline; an on-demand one starts its ``run.runs`` runs.

        Raises:
            PipelineValidationError (422), Forbidden / NameTaken (403), PipelineExists (409),
            Unplaceable (422), FabricError (503).
        """
        spec = await self.prepare(obj, tenant)
        bus = self.controller.bus
        async with self._lock:
            entry = await self.kv.get(spec.name)
            old = Plan.decode(entry.value) if entry is not None and entry.value else None
            row = await asyncio.to_thread(self.store.get, spec.name)
            owner = old.tenant if old is not None else (row.tenant if row else tenant)
            if owner != tenant:
                raise NameTaken(
                    f"pipeline name {spec.name!r} belongs to another tenant; choose another name"
                )
            if old is not None and old.state == "active" and not replace:
                raise PipelineExists(
                    f"pipeline {spec.name!r} is already running (version {old.version}); "
                    f"cancel it first ('fades pipeline cancel {spec.name}') or submit it again "
                    "with --replace (HTTP: ?replace=true)"
                )
            plan = self.plan(spec)
            if old is not None:
                plan = plan.model_copy(update={"version": old.version + 1})
            q = spec.queue
            try:
                await pipeline_bus(bus, plan).stream(
                    bundle_stream(spec.name),
                    [f"fades.bundle.{spec.name}.>"],
                    max_msgs_per_subject=q.max_runs,
                    max_bytes=q.max_bytes,
                    discard="new" if q.when_full == "refuse" else "old",
                )
            except FabricError as exc:
                if plan.domain is None:
                    raise
                raise FabricError(
                    f"pipeline {spec.name!r}: its queue goes to site {plan.domain}, whose "
                    f"server does not answer (is its uplink down?): {exc}"
                ) from exc
            await asyncio.to_thread(
                self.store.put, spec.name, tenant, plan.spec, plan.submitted_at, plan.ends_at
            )
            try:
                if entry is None or not entry.value:
                    revision = await self.kv.create(spec.name, plan.encode())
                else:
                    revision = await self.kv.update(spec.name, plan.encode(), entry.revision)
            except FabricConflict:
                raise PipelineExists(
                    f"pipeline {spec.name!r} was submitted by someone else at the same time"
                ) from None
            self.plans[spec.name] = (plan, revision)
        log.info("pipeline %s v%d deployed for %s", spec.name, plan.version, tenant)
        if old is not None and old.state == "active":
            await self._end_replaced(spec.name, plan.version)
        started: dict[str, Any] = {"runs": [], "refused": 0}
        if spec.run.mode == "on-demand":
            started = await self.start_runs(spec.name, tenant, spec.run.runs)
        out = {
            "pipeline": spec.name,
            "version": plan.version,
            "state": plan.state,
            "ends_at": plan.ends_at,
            "rows": rows(plan, spec),
            "queue_at": self.queue_at(plan),
            "warnings": self.warnings(spec),
        }
        if old is not None and old.domain != plan.domain:
            out["queue_moved"] = await self._left_behind(old)
        return out | started

    async def _end_replaced(self, name: str, version: int) -> None:
        """End the runs still going when a replace is applied: ``cancelled``, naming the
        version that replaced their plan (the nodes drop the old plan's stages with it)."""
        reason = f"replaced by version {version}"
        for r in await asyncio.to_thread(self.store.running, name):
            if await asyncio.to_thread(self.store.end_run, name, r.run, "cancelled", reason):
                self.controller.metrics.pipeline_runs.labels("cancelled").inc()

    async def start_runs(self, name: str, tenant: str, count: int) -> dict[str, Any]:
        """Start ``count`` runs of an active pipeline: a trigger bundle to each start stage
        instance. Runs a full queue refuses are recorded as dropped (``refused``)."""
        if not 1 <= count <= MAX_RUNS_PER_REQUEST:
            raise PipelineValidationError(
                f"count must be 1 to {MAX_RUNS_PER_REQUEST}, not {count}",
                problems=[("count", f"1 to {MAX_RUNS_PER_REQUEST}")],
            )
        plan, _ = await self.active(name, tenant)
        spec = PipelineSpec.model_validate(plan.spec)
        now = time.time()
        ids = await asyncio.to_thread(self.store.new_runs, name, count, now)
        started: list[str] = []
        refused: list[str] = []
        for run in ids:
            try:
                await self._trigger(plan, spec, run, now)
            except QueueFull as exc:
                refused.append(run)
                await asyncio.to_thread(self.store.end_run, name, run, "dropped", f"refused: {exc}")
                self.controller.metrics.pipeline_runs.labels("dropped").inc()
                self.controller.metrics.pipeline_drops.inc()
                continue
            started.append(run)
        self.controller.metrics.pipeline_started.inc(len(started))
        out: dict[str, Any] = {"runs": started, "refused": len(refused)}
        if refused:
            out["detail"] = (
                f"{len(refused)} run(s) refused: the queue of pipeline {name!r} is full "
                f"(max_runs {spec.queue.max_runs}, when_full refuse)"
            )
        return out

    async def _trigger(self, plan: Plan, spec: PipelineSpec, run: str, started_at: float) -> None:
        """Publish one run's trigger bundle to every instance of every start stage (the
        message ids make a second publish of the same run a no-op within the stream's
        duplicate window)."""
        for a in plan.assignments:
            if not spec.is_start(a.stage):
                continue
            b = Bundle(
                pipeline=plan.pipeline,
                plan_version=plan.version,
                run=run,
                stage=a.stage,
                instance=a.instance,
                from_stage=TRIGGER,
                producer=TRIGGER,
                priority=spec.priority,
                run_started_at=started_at,
                sent_at=time.time(),
            )
            await pipeline_bus(self.controller.bus, plan).publish(
                bundle_subject(plan.pipeline, a.stage, a.instance), b.encode(), msg_id=b.msg_id()
            )

    async def _left_behind(self, old: Plan) -> str:
        """What a resubmit that moved the queue to another domain left in the old one."""
        before = f"site {old.domain}" if old.domain else "the hub"
        bus = pipeline_bus(self.controller.bus, old)
        left = 0
        try:
            for a in old.assignments:
                left += (
                    await bus.pending(
                        bundle_stream(old.pipeline), bundle_durable(a.stage, a.instance)
                    )
                    or 0
                )
        except FabricError as exc:
            return f"the queue moved from {before}; its old queue could not be read: {exc}"
        return (
            f"the queue moved from {before}; {left} bundle(s) left in the old queue are not "
            "carried over"
        )

    async def resume(self) -> int:
        """After a restart: publish again the triggers of runs this controller started that
        no node has reported on yet (it may have stopped between recording a run and
        publishing its trigger). Only runs younger than the duplicate window, so a trigger
        that did go out is dropped as a duplicate, never run twice."""
        since = time.time() - DUPLICATE_WINDOW_S + RESUME_MARGIN_S
        count = 0
        for name, (plan, _) in list(self.plans.items()):
            if plan.state != "active":
                continue
            spec = PipelineSpec.model_validate(plan.spec)
            for r in await asyncio.to_thread(self.store.silent_runs, name, since):
                try:
                    await self._trigger(plan, spec, r.run, r.started_at)
                    count += 1
                except QueueFull:
                    continue
                except FabricError as exc:
                    if plan.domain is None:
                        raise
                    # a site out of reach: its runs' deadlines end them; the others go on
                    log.warning("pipeline %s: triggers not sent again: %s", name, exc)
                    break
        if count:
            log.info("published the triggers of %d unreported run(s) again", count)
        return count

    # --- cancel ------------------------------------------------------------------------------
    async def cancel(self, name: str, tenant: str) -> dict[str, Any]:
        """Stop a pipeline: the plan becomes ``cancelled`` (engines stop), running runs end
        ``cancelled``."""
        await self.active(name, tenant)
        await self.set_state(name, "cancelled", "cancelled by the tenant")
        return {"pipeline": name, "state": "cancelled"}

    async def set_state(self, name: str, state: str, reason: str) -> None:
        """Write the plan's new state (compare-and-set) and end its running runs."""
        async with self._lock:
            await asyncio.to_thread(self.store.set_state, name, state, reason)
            plan = await self._write(name, lambda p: p.model_copy(update={"state": state}))
        if plan is None:
            return
        for r in await asyncio.to_thread(self.store.running, name):
            if await asyncio.to_thread(self.store.end_run, name, r.run, "cancelled", reason):
                self.controller.metrics.pipeline_runs.labels("cancelled").inc()
        log.info("pipeline %s %s: %s", name, state, reason)

    async def _write(self, name: str, change: Callable[[Plan], Plan]) -> Plan | None:
        """Apply ``change(plan) -> plan`` to the stored plan by compare-and-set (retried on a
        conflict); None when there is no plan or nothing changed. Hold ``self._lock``."""
        for _ in range(5):
            entry = await self.kv.get(name)
            if entry is None or not entry.value:
                return None
            plan = Plan.decode(entry.value)
            new = change(plan)
            if new is plan or new == plan:
                self.plans[name] = (plan, entry.revision)
                return None
            try:
                revision = await self.kv.update(name, new.encode(), entry.revision)
            except FabricConflict:
                continue
            self.plans[name] = (new, revision)
            return new
        raise PipelineExists(f"pipeline {name!r} kept changing under a re-plan; try again")

    # --- reading -----------------------------------------------------------------------------
    async def active(self, name: str, tenant: str) -> tuple[Plan, PipelineRow]:
        row = await self.row(name, tenant)
        cached = self.plans.get(name)
        if cached is None or cached[0].state != "active":
            state = cached[0].state if cached else row.state
            raise PipelineNotFound(f"pipeline {name!r} is not active (it is {state})")
        return cached[0], row
