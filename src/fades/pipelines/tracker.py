"""The controller following its pipelines: stage events into runs, deadlines, ends, failover.

* **Events.** A durable consumer on ``FADES_PEVENTS`` stores each
  :class:`~fades.pipelines.protocol.StageEvent` once (see
  :class:`~fades.controller.pipestore.PipelineStore`). A run is ``done`` when every instance
  of every finale stage is done or skipped, ``failed`` when a stage failed, ``dropped`` when
  a full queue dropped one of its bundles. A finale's result is recorded once. An event is
  acked only after it is stored, so a controller that was down catches up on restart.
* **Deadlines and ends.** Every :data:`SWEEP_S` a running run older than the spec's
  ``run_deadline_s`` fails with the stages it was still waiting on; a pipeline whose
  ``ends_at`` passed becomes ``finished``.
* **Failover.** Every :data:`SWEEP_S` each active plan is re-planned against the registry
  (:func:`fades.pipelines.planner.replan`): a stage on a node the registry marks down is
  substituted, skipped or left waiting as its spec says, and a node that came back gets its
  stages again. The new plan is written by compare-and-set, with its version bumped. So a
  dead node's stages move at most ``down_after`` (the registry's heartbeat timeout, default
  10 s) plus :data:`SWEEP_S` after its last heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from fades.aiostop import cancel_all, wait_for
from fades.errors import FabricError, FadesError
from fades.pipelines.protocol import (
    EVENTS_STREAM,
    Plan,
    StageEvent,
    bundle_durable,
    bundle_stream,
)
from fades.pipelines.sites import pipeline_bus, site_reachable
from fades.pipelines.spec import PipelineSpec

if TYPE_CHECKING:
    from fades.bus.base import Delivery
    from fades.pipelines.service import PipelineService

log = logging.getLogger("fades.pipelines")

#: seconds between checks of deadlines, ends and the registry (failover)
SWEEP_S = 0.25
#: seconds between readings of the bundle queues' depths for the metrics
QUEUE_METRICS_S = 5.0
#: most stage events stored in one transaction
EVENT_BATCH = 256
#: the controller's durable consumer of stage events
EVENTS_CONSUMER = "controller-pevents"
#: seconds a site must have been reachable again before the controller fails its pipelines'
#: runs by deadline (what the site stored during an outage drains first; the site's nodes
#: enforce the deadline themselves meanwhile)
SITE_DRAIN_GRACE_S = 30.0


class Tracker:
    """The background loops of a :class:`~fades.pipelines.service.PipelineService`."""

    def __init__(self, service: PipelineService) -> None:
        self.service = service
        self.controller = service.controller
        self._tasks: list[asyncio.Task[None]] = []
        self._specs: dict[tuple[str, int], tuple[PipelineSpec, dict[str, set[str]]]] = {}
        #: (pipeline, new version, epoch seconds, what changed) per re-plan, oldest first
        self.failovers: list[tuple[str, int, float, str]] = []
        self._refused: dict[str, str] = {}
        #: site -> monotonic time since when the controller has seen a node of it up
        self._site_up: dict[str, float] = {}

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._consume(), name="fades-pipeline-events"),
            asyncio.create_task(self._sweep(), name="fades-pipeline-sweep"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_all(tasks)

    def spec_of(self, plan: Plan) -> tuple[PipelineSpec, dict[str, set[str]]]:
        """The plan's spec and its finale instances (stage -> instance names), cached."""
        key = (plan.pipeline, plan.version)
        found = self._specs.get(key)
        if found is None:
            spec = PipelineSpec.model_validate(plan.spec)
            finales = {
                s.name: {a.instance for a in plan.instances(s.name)}
                for s in spec.stages
                if spec.is_finale(s.name)
            }
            found = self._specs[key] = (spec, finales)
            if len(self._specs) > 256:
                self._specs.pop(next(iter(self._specs)))
        return found

    # --- events ------------------------------------------------------------------------------
    async def _consume(self) -> None:
        """Take events off the stream while the previous batch is being stored."""
        queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=EVENT_BATCH)
        writer = asyncio.create_task(self._store_batches(queue), name="fades-pipeline-store")
        try:
            async for d in self.controller.bus.consume(
                EVENTS_STREAM, EVENTS_CONSUMER, "fades.pevent.>"
            ):
                await queue.put(d)
        finally:
            await cancel_all([writer])

    async def _store_batches(self, queue: asyncio.Queue[Delivery]) -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < EVENT_BATCH:
                batch.append(queue.get_nowait())
            try:
                stored = await self.handle_many([d.data for d in batch])
            except asyncio.CancelledError:
                raise
            except Exception:  # the database failed: unacked, so redelivered later
                log.exception("could not store %d stage event(s)", len(batch))
                continue
            for d, new in zip(batch, stored, strict=True):
                with contextlib.suppress(Exception):
                    await (d.term() if new is None else d.ack())

    async def handle(self, data: bytes) -> bool | None:
        """Record one event; None if it is malformed or for no pipeline of ours."""
        return (await self.handle_many([data]))[0]

    async def handle_many(self, datas: list[bytes]) -> list[bool | None]:
        """Record events in one transaction: for each, None if it is malformed or for no
        pipeline of ours (dropped), False if it was recorded before, True if new."""
        out: list[bool | None] = []
        items: list[tuple[StageEvent, dict[str, set[str]]]] = []
        for data in datas:
            try:
                ev = StageEvent.decode(data)
            except FabricError as exc:
                log.warning("dropping a stage event: %s", exc)
                out.append(None)
                continue
            cached = self.service.plans.get(ev.pipeline)
            if cached is None:
                log.warning("dropping a stage event for unknown pipeline %r", ev.pipeline)
                out.append(None)
                continue
            items.append((ev, self.spec_of(cached[0])[1]))
            out.append(False)
        recs = await asyncio.to_thread(self.service.store.record_many, items) if items else []
        m = self.controller.metrics
        pending = iter(zip(items, recs, strict=True))
        for k, value in enumerate(out):
            if value is None:
                continue
            (ev, _), rec = next(pending)
            out[k] = rec.new
            if not rec.new:
                continue
            if ev.status == "done" and (cached := self.service.plans.get(ev.pipeline)):
                self.controller.devices.actuate(ev, self.spec_of(cached[0])[0])  # an actuator
            m.pipeline_events.labels(ev.status).inc()
            if ev.status == "dropped":
                m.pipeline_drops.inc()
            if rec.ended and rec.run_status is not None:
                m.pipeline_runs.labels(rec.run_status).inc()
        return out

    # --- deadlines, ends, failover -----------------------------------------------------------
    async def _sweep(self) -> None:
        last_deadlines = last_depths = 0.0
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.failover()
                if time.monotonic() - last_deadlines >= 1.0:
                    last_deadlines = time.monotonic()
                    await self.deadlines()
                if time.monotonic() - last_depths >= QUEUE_METRICS_S:
                    last_depths = time.monotonic()
                    await self.queue_depths()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pipeline sweep failed; retrying")

    async def failover(self) -> None:
        """Re-plan every active plan against the registry's up and down nodes."""
        from fades.pipelines.sites import replan_at_site as replan

        if not self.controller.connected:
            return  # cut off from NATS: every node looks down; decide nothing
        reg = self.controller.registry
        up = [e.info for e in reg.up()]
        down = [e.info for e in reg.down()]
        if not up:
            return
        for name, (plan, _) in list(self.service.plans.items()):
            if plan.state != "active":
                continue
            spec, _ = self.spec_of(plan)
            try:
                new = replan(plan, spec, up, down, self.controller.placer)
            except FadesError as exc:
                if self._refused.get(name) != str(exc):
                    self._refused[name] = str(exc)
                    log.warning("pipeline %s cannot be re-planned: %s", name, exc)
                continue
            if new is plan:
                continue
            self._refused.pop(name, None)

            def change(current: Plan, up: Any = up, down: Any = down, spec: Any = spec) -> Plan:
                if current.state != "active":
                    return current
                replanned: Plan = replan(current, spec, up, down, self.controller.placer)
                return replanned

            async with self.service._lock:
                written = await self.service._write(name, change)
            if written is None:
                continue
            what = "; ".join(
                f"{a.stage}/{a.instance} -> {a.node} ({a.mode})"
                for a in written.assignments
                if a not in plan.assignments
            )
            self.failovers.append((name, written.version, time.time(), what))
            del self.failovers[:-1000]
            self.controller.metrics.pipeline_failovers.inc()
            log.warning("pipeline %s re-planned (v%d): %s", name, written.version, what)

    def _settled(self, plan: Plan, up: list[Any]) -> bool:
        """False while ``plan``'s site is unreachable or came back less than
        :data:`SITE_DRAIN_GRACE_S` ago (its runs' events may still be on their way)."""
        if plan.domain is None:
            return True
        if not self.controller.connected or not site_reachable(plan, up):
            self._site_up.pop(plan.domain, None)
            return False
        since = self._site_up.setdefault(plan.domain, time.monotonic())
        return time.monotonic() - since >= SITE_DRAIN_GRACE_S

    async def queue_depths(self) -> None:
        """Set the queue-depth gauge of every stage instance of the active plans."""
        gauge = self.controller.metrics.pipeline_queue
        gauge.clear()
        up = [e.info for e in self.controller.registry.up()]
        for name, (plan, _) in list(self.service.plans.items()):
            if plan.state != "active" or not site_reachable(plan, up):
                continue  # (an unreachable site's queues cannot be read: no waiting on them)
            bus = pipeline_bus(self.controller.bus, plan)
            for a in plan.assignments:
                with contextlib.suppress(Exception):
                    depth = await wait_for(
                        bus.pending(bundle_stream(name), bundle_durable(a.stage, a.instance)),
                        2.0,
                    )
                    if depth is not None:
                        gauge.labels(name, a.stage, a.instance).set(depth)

    async def deadlines(self) -> None:
        """Fail runs past their deadline; finish pipelines past their end."""
        now = time.time()
        up = [e.info for e in self.controller.registry.up()]
        for name, (plan, _) in list(self.service.plans.items()):
            if plan.state != "active":
                continue
            if plan.ends_at is not None and now >= plan.ends_at:
                await self.service.set_state(
                    name, "finished", "the pipeline reached its end (run.until / run.for_s)"
                )
                continue
            spec, _ = self.spec_of(plan)
            limit = spec.run.run_deadline_s
            if limit is None or not self._settled(plan, up):
                continue
            store = self.service.store
            for r in await asyncio.to_thread(store.running, name):
                if now - r.started_at <= limit:
                    continue
                events = await asyncio.to_thread(store.timeline, name, r.run)
                ended = {e.stage for e in events if e.status != "started"}
                waiting = [s.name for s in spec.stages if s.name not in ended]
                reason = (
                    f"run deadline of {limit:g} s passed; still waiting on "
                    f"{', '.join(waiting) or 'the finale'}"
                )
                if await asyncio.to_thread(store.end_run, name, r.run, "failed", reason):
                    self.controller.metrics.pipeline_runs.labels("failed").inc()
