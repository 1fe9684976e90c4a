"""A node's pipeline engine: bundles in, stage executions, bundles and events out.

:class:`PipelineEngine` is started and stopped by the node agent. It watches the plans in
KV ``fades_plans``; for every active plan, it consumes the durable bundle consumer of each
stage instance assigned to this node (mode ``run`` or ``skip``; ``wait`` leaves the bundles
waiting, durable), and runs the triggers of its start stages (:mod:`.triggers`).

For each bundle: its inputs are gathered per (run, stage, instance) (:mod:`.collect`); the
guard is evaluated (false: the stage is ``skipped`` and downstream get a skipped input; an
error: the stage ``failed``, kind ``GuardFailed``); the stage runs as a task on this node's
orchestrator (:mod:`.stagerun`: a redelivery reuses the existing execution); the result
goes to each downstream instance, in process when it runs on this node (no network hop),
else as a durable bundle (:mod:`.bundles`); a stage with ``publish`` also sends it on that
subject; a :class:`StageEvent` records what happened (``at``: when the stage ended). The
incoming bundles are acked only when all that is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from fades.aiostop import cancel_all
from fades.bus.base import Delivery
from fades.errors import (
    AccessDenied,
    FabricError,
    FadesError,
    InputTooLarge,
    QueueFull,
    TaskValidationError,
)
from fades.pipelines.bundles import BundleIO, encoded_size, finale_too_big
from fades.pipelines.collect import Arrival, Collector, Gathering, Hold
from fades.pipelines.protocol import (
    PLANS_BUCKET,
    Bundle,
    Plan,
    StageEvent,
    StageStatus,
    bundle_durable,
    bundle_stream,
    bundle_subject,
    stage_task_id,
)
from fades.pipelines.routing import expected, input_name, targets
from fades.pipelines.spec import PipelineSpec
from fades.pipelines.stageinputs import guard_reason, stage_inputs
from fades.pipelines.stagerun import StageRunner
from fades.pipelines.triggers import Triggers

if TYPE_CHECKING:
    from fades.node.agent import NodeAgent

log = logging.getLogger("fades.pipelines")

#: seconds before an unacked bundle is redelivered (kept alive while its stage works)
ACK_WAIT_S = 10.0
#: stage executions at the same time on one node (the orchestrator queues them by priority)
MAX_EXECUTIONS = 32
#: pause before consuming or watching again after the fabric failed
BACKOFF_S = 0.5


class PipelineEngine:
    """Runs the stages the plans assign to one node."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.name = agent.name
        self.plans: dict[str, Plan] = {}
        self.specs: dict[str, PipelineSpec] = {}
        self.consumers: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self.collector = Collector(self._fire)
        self.runner = StageRunner(agent)
        self.triggers = Triggers(self)
        self.io: BundleIO | None = None
        #: a site pipeline's bundles, per JetStream domain (its events still go up)
        self.site_io: dict[str, BundleIO] = {}
        #: bundles_in, handovers, bundles_out, executed, reused, skipped, failed, dropped,
        #: events, triggered (runs started here by automatic triggers), publish_failed
        self.counters: dict[str, int] = dict.fromkeys(
            ("bundles_in", "handovers", "bundles_out", "executed", "reused", "skipped",
             "failed", "dropped", "events", "triggered", "publish_failed"),
            0,
        )  # fmt: skip
        self._exec = asyncio.Semaphore(MAX_EXECUTIONS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.stopping = False

    def require_io(self) -> BundleIO:
        if self.io is None:
            raise FabricError("the pipeline engine is not started")
        return self.io

    def io_for(self, pipeline: str) -> BundleIO:
        """The bundle side of ``pipeline``: the hub's, or its site's domain (Plan.domain)."""
        io = self.require_io()
        plan = self.plans.get(pipeline)
        if plan is None or plan.domain is None:
            return io
        site = self.site_io.get(plan.domain)
        if site is None:
            settings = self.agent.settings
            here = settings is not None and settings.site == plan.domain
            bus = io.bus.local() if here else io.bus.in_domain(plan.domain)
            site = self.site_io[plan.domain] = BundleIO(bus, up=io.bus)
        return site

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.io = BundleIO(self.agent.require_bus())
        self.runner.bind()
        self._loops = [asyncio.create_task(self._watch()), asyncio.create_task(self._keepalive())]

    async def stop(self) -> None:
        self.stopping = True
        self.triggers.stop_all()
        tasks = [*self._loops, *self.consumers.values(), *self._tasks]
        await cancel_all(tasks)
        self.consumers.clear()

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- plans -------------------------------------------------------------------------------
    async def _watch(self) -> None:
        while not self.stopping:
            try:
                kv = await self.agent.require_bus().kv(PLANS_BUCKET)
                async for entry in kv.watch():
                    if entry is not None:
                        await self.apply(entry.key, entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("node %s: watching plans failed: %r", self.name, exc)
            await asyncio.sleep(BACKOFF_S)

    async def apply(self, pipeline: str, value: bytes) -> None:
        """Take one plan (or its deletion): start and stop consumers and triggers."""
        plan: Plan | None = None
        if value:
            try:
                plan = Plan.decode(value)
                spec = PipelineSpec.model_validate(plan.spec)
            except (FabricError, ValueError) as exc:
                log.warning("node %s: ignoring plan %s: %s", self.name, pipeline, exc)
                return
        if plan is None or plan.state != "active":
            self._retire(pipeline)
            return
        old = self.plans.get(pipeline)
        if old is not None and old.version > plan.version:
            return  # an older revision seen late
        if old is not None and old.domain != plan.domain:
            self._retire(pipeline)  # its stream moved (replace): consume from the new one
        self.plans[pipeline], self.specs[pipeline] = plan, spec
        await self.io_for(pipeline).ensure(plan)
        mine = {
            (pipeline, a.stage, a.instance)
            for a in plan.on_node(self.name)
            if a.mode in ("run", "skip")
        }
        for key in [k for k in self.consumers if k[0] == pipeline and k not in mine]:
            self.consumers.pop(key).cancel()
        for key in sorted(mine - set(self.consumers)):
            self.consumers[key] = asyncio.create_task(self._consume(*key))
        self.triggers.update(plan, spec)

    def _retire(self, pipeline: str) -> None:
        self.plans.pop(pipeline, None)
        self.specs.pop(pipeline, None)
        self.triggers.stop(pipeline)
        for key in [k for k in self.consumers if k[0] == pipeline]:
            self.consumers.pop(key).cancel()

    def serves(self, pipeline: str, stage: str, instance: str) -> bool:
        return (pipeline, stage, instance) in self.consumers

    # --- bundles in --------------------------------------------------------------------------
    async def _consume(self, pipeline: str, stage: str, instance: str) -> None:
        bus = self.io_for(pipeline).bus
        while not self.stopping:
            try:
                async for d in bus.consume(
                    bundle_stream(pipeline),
                    bundle_durable(stage, instance),
                    bundle_subject(pipeline, stage, instance),
                    ack_wait=ACK_WAIT_S,
                ):
                    await self._receive(d)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("node %s: consuming %s.%s failed: %r", self.name, pipeline, stage, exc)
            await asyncio.sleep(BACKOFF_S)

    async def _receive(self, d: Delivery) -> None:
        self.counters["bundles_in"] += 1
        try:
            bundle = Bundle.decode(d.data)
        except FabricError as exc:
            log.warning("node %s: dropping an unreadable bundle: %s", self.name, exc)
            with contextlib.suppress(Exception):
                await d.term()
            return
        io = self.io_for(bundle.pipeline)
        received = time.time()
        try:
            value = await io.value(bundle)
        except FabricError as exc:
            await self._event(bundle.pipeline, bundle.run, bundle.stage, bundle.instance,
                              "failed", bundle.run_started_at, error=str(exc),
                              error_kind=exc.kind)  # fmt: skip
            with contextlib.suppress(Exception):
                await d.ack()
            return

        async def forget() -> None:
            await io.forget(bundle)

        await self.arrive(bundle, value, received, Hold([d], after_ack=forget))

    async def arrive(self, bundle: Bundle, value: Any, received: float | None, hold: Hold) -> None:
        """One input for (run, stage, instance), from the stream or handed over in process
        (``received`` None: now)."""
        received = time.time() if received is None else received
        plan, spec = self.plans.get(bundle.pipeline), self.specs.get(bundle.pipeline)
        if plan is None or spec is None:
            await hold.release(ok=False)  # the plan went away meanwhile: leave it durable
            return
        key = (bundle.pipeline, bundle.run, bundle.stage, bundle.instance)
        want = expected(spec, plan, bundle.stage, bundle.instance)
        timeout = spec.stage(bundle.stage).gather.timeout_s
        await self.collector.arrive(key, want, timeout, Arrival(bundle, value, received), hold)

    def _fire(self, g: Gathering) -> None:
        self.spawn(self._execute(g))

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(ACK_WAIT_S / 3)
            await self.collector.keepalive()
            now = time.time()
            for g in list(self.collector.open.values()):
                spec = self.specs.get(g.key[0])
                dl = spec.run.run_deadline_s if spec is not None else None
                started = min(a.bundle.run_started_at for a in g.arrivals.values())
                if not g.fired and dl is not None and now > started + dl:
                    self.collector._fire(g)  # fails it with the deadline's reason

    # --- one stage execution -----------------------------------------------------------------
    async def _execute(self, g: Gathering) -> None:
        ok = False
        try:
            async with self._exec:
                await self._run_stage(g)
            ok = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("node %s: stage %s left for redelivery: %r", self.name, g.key, exc)
        finally:
            if ok:
                self.collector.finished(g.key)
            else:
                self.collector.open.pop(g.key, None)
            for h in g.holds:
                await h.release(ok)

    async def _run_stage(self, g: Gathering) -> None:
        pipeline, run, stage, instance = g.key
        plan, spec = self.plans.get(pipeline), self.specs.get(pipeline)
        if plan is None or spec is None:
            raise FabricError(f"pipeline {pipeline} has no active plan here")
        st = spec.stage(stage)
        arrivals = list(g.arrivals.values())
        started = min(a.bundle.run_started_at for a in arrivals)
        hop = max(max(0.0, a.received - a.bundle.sent_at) for a in arrivals)
        bytes_in = sum(a.bundle.bytes for a in arrivals)
        inputs = stage_inputs(spec, plan, g)
        mode = next((a.mode for a in plan.on_node(self.name)
                     if a.stage == stage and a.instance == instance), "run")  # fmt: skip
        base: dict[str, Any] = {"timing": {"hop": hop}, "bytes_in": bytes_in}
        dl = spec.run.run_deadline_s
        if dl is not None and time.time() > started + dl:
            await self._event(pipeline, run, stage, instance, "failed", started, **base,
                              error_kind="DeadlineMissed",
                              error=f"the run's deadline ({dl:g} s after it started) passed "
                              f"before stage {stage} could run")  # fmt: skip
            self.counters["failed"] += 1
            return
        reason = None
        if mode == "skip":
            reason = f"stage {stage} is skipped on failover (its node is down)"
        elif st.when:
            by_stage = {up: inputs.get(input_name(up)) for up in st.after}
            try:
                reason = guard_reason(st.when, by_stage)
            except ValueError as exc:  # the guard failed: the stage (and so the run) fails
                await self._event(pipeline, run, stage, instance, "failed", started, **base,
                                  error_kind="GuardFailed", error=str(exc))  # fmt: skip
                self.counters["failed"] += 1
                return
        if reason is not None:
            ended = time.time()
            out = await self._forward(plan, spec, g, None, reason, started)
            await self._event(pipeline, run, stage, instance, "skipped", started, **base,
                              bytes_out=out, error=reason, at=ended)  # fmt: skip
            self.counters["skipped"] += 1
            return
        task_id = stage_task_id(pipeline, run, stage, instance)

        async def build() -> dict[str, Any]:
            return await self.runner.task(plan, spec, stage, instance, run, started, inputs)

        try:
            rec, fresh = await self.runner.run(task_id, build)
        except (TaskValidationError, AccessDenied, InputTooLarge) as exc:  # never runnable
            why = f"stage {stage} cannot run: {exc}"
            await self._event(pipeline, run, stage, instance, "failed", started, **base,
                              error_kind=exc.kind, error=why)  # fmt: skip
            self.counters["failed"] += 1
            return
        # the stage ended now: its event says so even when a same-node downstream stage,
        # handed the result in process, reports before it does
        ended = time.time()
        self.counters["executed" if fresh else "reused"] += 1
        timing: dict[str, float] = {"hop": hop}
        timing.update({k: rec.timing[k] for k in ("queue", "start", "compute") if k in rec.timing})
        bytes_in += rec.bytes_read or 0  # the sensor data the stage read on this node
        if rec.status != "done":
            await self._event(pipeline, run, stage, instance, "failed", started,
                              timing=timing, bytes_in=bytes_in, error_kind=rec.error_kind,
                              error=rec.error, at=ended)  # fmt: skip
            self.counters["failed"] += 1
            return
        finale = spec.is_finale(stage)
        max_payload = self.agent.require_bus().max_payload
        too_big = finale_too_big(rec.result, max_payload, stage) if finale else None
        if too_big:  # its event could never be stored: fail it once, say why
            await self._event(pipeline, run, stage, instance, "failed", started, timing=timing,
                              bytes_in=bytes_in, error_kind="ResultTooLarge", error=too_big,
                              at=ended)  # fmt: skip
            self.counters["failed"] += 1
            return
        out = await self._forward(plan, spec, g, rec.result, None, started)
        if st.publish:
            note = {"pipeline": pipeline, "run": run, "stage": stage, "node": self.name,
                    "value": rec.result}  # fmt: skip
            try:
                await self.agent.require_bus().send(st.publish, json.dumps(note).encode())
            except FadesError as exc:  # the stage itself is done; say the copy was not sent
                self.counters["publish_failed"] += 1
                log.warning("node %s: %s/%s: publish on %s failed: %s", self.name, pipeline,
                            stage, st.publish, exc)  # fmt: skip
        if finale:  # its result leaves in its event: the run's result
            out += encoded_size(rec.result)
        await self._event(pipeline, run, stage, instance, "done", started, timing=timing,
                          bytes_in=bytes_in, bytes_out=out, at=ended,
                          result=rec.result if finale else None)  # fmt: skip

    async def _forward(
        self,
        plan: Plan,
        spec: PipelineSpec,
        g: Gathering,
        value: Any,
        skip: str | None,
        started: float,
    ) -> int:
        """Send a result (or a skip) to every downstream instance; returns the bytes sent,
        in process or as bundles."""
        pipeline, run, stage, instance = g.key
        sent = 0
        for down in spec.downstream(stage):
            for a in targets(spec, plan, stage, instance, down):
                b = Bundle(pipeline=pipeline, plan_version=plan.version, run=run, stage=down,
                           instance=a.instance, from_stage=stage, producer=instance,
                           skipped=skip, priority=spec.priority, run_started_at=started,
                           sent_at=time.time())  # fmt: skip
                if a.node == self.name and self.serves(pipeline, down, a.instance):
                    self.counters["handovers"] += 1
                    size = 0 if skip else encoded_size(value)
                    b = b.model_copy(update={"bytes": size})
                    sent += size  # handed over in memory: the same bytes, no hop
                    hold = Hold([], parents=g.holds, on_fail=partial(self.collector.redo, g.key))
                    self.spawn(self.arrive(b, value, None, hold))
                    continue
                try:
                    sent += await self.io_for(pipeline).send(b, value)
                    self.counters["bundles_out"] += 1
                except QueueFull as exc:
                    self.counters["dropped"] += 1
                    await self._event(pipeline, run, down, a.instance, "dropped", started,
                                      error_kind=exc.kind, error=str(exc))  # fmt: skip
        return sent

    async def _event(
        self,
        pipeline: str,
        run: str,
        stage: str,
        instance: str,
        status: StageStatus,
        started: float,
        **fields: Any,
    ) -> None:
        spec = self.specs.get(pipeline)
        role = spec.role(stage) if spec is not None else "midsection"
        now = fields.pop("at", None) or time.time()
        timing = dict(fields.pop("timing", {}))
        if started:
            timing["total"] = now - started
        ev = StageEvent(pipeline=pipeline, run=run, stage=stage, instance=instance,
                        node=self.name, status=status, role=role, timing=timing,
                        run_started_at=started, at=now, **fields)  # fmt: skip
        await self.require_io().event(ev)
        self.counters["events"] += 1
