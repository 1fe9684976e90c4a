"""Run triggers on the node that holds a start stage of an automatic pipeline.

* ``every_s``: at each multiple of ``every_s`` (epoch time) a run ``t<int(epoch // every_s)>``
  starts; the id is the same on every node of a scattered start, so a gather matches them;
* ``on_reading``: every sensor reading on a subject matching the pattern starts a run
  ``r<milliseconds>-<node>-<subject hash>``, and the start stage sees the reading as
  ``data["trigger"]`` (``{"subject": ..., "reading": ...}``).

A trigger is a TRIGGER bundle published to the node's own start instance (durable, de-duplicated
by id), so it goes through the pipeline's bounded queue: when the queue is full and refuses,
the run is dropped and counted (a ``dropped`` event at most :data:`DROP_EVENTS_PER_S` times a
second, saying how many since the last one); nothing is buffered on the node. Triggers stop
at the plan's ``ends_at`` and when it is cancelled or finished. On-demand runs are started by
the controller with the same kind of bundle.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from typing import TYPE_CHECKING, Any

from fades.errors import FadesError, QueueFull
from fades.pipelines.protocol import TRIGGER, Bundle, Plan
from fades.pipelines.spec import PipelineSpec

if TYPE_CHECKING:
    from fades.pipelines.engine import PipelineEngine

log = logging.getLogger("fades.pipelines")

#: at most this many ``dropped`` events per pipeline and second (the rest are counted)
DROP_EVENTS_PER_S = 5.0


class Triggers:
    """The automatic triggers of one node's engine."""

    def __init__(self, engine: PipelineEngine) -> None:
        self.engine = engine
        self.timers: dict[str, asyncio.Task[None]] = {}
        self._every_s: dict[str, float] = {}  # pipeline: the period its timer runs with
        #: pipeline: the ``on_reading`` pattern it starts runs on now
        self.listening: dict[str, str] = {}
        #: (pipeline, pattern) subscriptions made (the bus cannot unsubscribe: a listener
        #: whose pattern is no longer its pipeline's ignores readings)
        self._subscribed: set[tuple[str, str]] = set()
        self._drops: dict[str, tuple[float, int]] = {}  # pipeline: last event, dropped since

    def starts(self, plan: Plan, spec: PipelineSpec) -> list[tuple[str, str]]:
        """The (start stage, instance) pairs this node runs."""
        node = self.engine.name
        return [
            (a.stage, a.instance)
            for a in plan.assignments
            if a.node == node and a.mode == "run" and not spec.stage(a.stage).after
        ]

    def update(self, plan: Plan, spec: PipelineSpec) -> None:
        p = plan.pipeline
        if spec.run.mode != "automatic" or not self.starts(plan, spec):
            self.stop(p)
            return
        # a replaced plan may change the trigger: a new period restarts the timer, a new
        # pattern moves the listening (the old pattern's listener then ignores readings)
        every = spec.run.every_s
        if p in self.timers and self._every_s.get(p) != every:
            self.timers.pop(p).cancel()
        if every is not None and p not in self.timers:
            self.timers[p] = asyncio.create_task(self._every(p, every))
            self._every_s[p] = every
        pattern = spec.run.on_reading
        if not pattern:
            self.listening.pop(p, None)
        elif self.listening.get(p) != pattern:
            self.listening[p] = pattern
            if (p, pattern) not in self._subscribed:
                self._subscribed.add((p, pattern))
                self.engine.spawn(self._subscribe(p, pattern))

    def stop(self, pipeline: str) -> None:
        task = self.timers.pop(pipeline, None)
        self._every_s.pop(pipeline, None)
        if task is not None:
            task.cancel()
        self.listening.pop(pipeline, None)  # the listener sees it and ignores readings

    def stop_all(self) -> None:
        for p in list(self.timers):
            self.stop(p)
        self.listening.clear()

    def _live(self, pipeline: str) -> tuple[Plan, PipelineSpec] | None:
        plan, spec = self.engine.plans.get(pipeline), self.engine.specs.get(pipeline)
        if plan is None or spec is None or plan.state != "active":
            return None
        if plan.ends_at is not None and time.time() >= plan.ends_at:
            return None
        return plan, spec

    async def _every(self, pipeline: str, every_s: float) -> None:
        while True:
            now = time.time()
            tick = (now // every_s + 1) * every_s
            await asyncio.sleep(tick - now)
            live = self._live(pipeline)
            if live is None:
                if pipeline not in self.engine.plans:
                    return
                continue
            await self.fire(live[0], live[1], f"t{int(tick // every_s)}", tick, None)

    async def _subscribe(self, pipeline: str, pattern: str) -> None:
        async def on_reading(subject: str, data: bytes) -> None:
            if self.listening.get(pipeline) != pattern:
                return
            live = self._live(pipeline)
            if live is None or not self._may_read(live[0].tenant, subject):
                return
            now = time.time()
            reading: Any
            try:
                reading = json.loads(data)
            except ValueError:
                reading = data.decode(errors="replace")
            at = now
            if isinstance(reading, dict) and isinstance(reading.get("ts"), (int, float)):
                at = float(reading["ts"])
            run = f"r{int(at * 1000)}-{self.engine.name}-{zlib.crc32(subject.encode()):08x}"
            await self.fire(live[0], live[1], run, now, {"subject": subject, "reading": reading})

        try:
            await self.engine.agent.require_bus().subscribe(pattern, on_reading)
        except FadesError as exc:
            self._subscribed.discard((pipeline, pattern))
            if self.listening.get(pipeline) == pattern:
                del self.listening[pipeline]
            log.warning("pipeline %s: cannot subscribe to %s: %s", pipeline, pattern, exc)

    def _may_read(self, tenant: str, subject: str) -> bool:
        """Whether this node's access policy lets ``tenant`` read the reading on ``subject``
        (``sensors.<node>.<location>.<sensor_type>``): a trigger hands the reading to the
        start stage, so it is held to the same policy as a data operation."""
        agent = self.engine.agent
        policy = agent.node.broker.policy if agent.node is not None else None
        parts = subject.split(".")
        rule = policy.rule(tenant) if policy is not None else None
        if len(parts) == 4 and rule is not None and rule.allows(parts[2], parts[3]):
            return True
        self.engine.counters["trigger_refused"] = self.engine.counters.get("trigger_refused", 0) + 1
        return False

    async def fire(
        self, plan: Plan, spec: PipelineSpec, run: str, started: float, value: Any
    ) -> None:
        """Start one run on this node's start instances."""
        io = self.engine.io_for(plan.pipeline)
        for stage, instance in self.starts(plan, spec):
            b = Bundle(
                pipeline=plan.pipeline,
                plan_version=plan.version,
                run=run,
                stage=stage,
                instance=instance,
                from_stage=TRIGGER,
                producer=TRIGGER,
                priority=spec.priority,
                run_started_at=started,
                sent_at=time.time(),
            )
            try:
                await io.send(b, value)
                self.engine.counters["triggered"] += 1
            except QueueFull as exc:
                await self._dropped(plan.pipeline, run, stage, instance, started, exc)
            except FadesError as exc:
                log.warning("pipeline %s: run %s not started: %s", plan.pipeline, run, exc)

    async def _dropped(
        self, pipeline: str, run: str, stage: str, instance: str, started: float, exc: QueueFull
    ) -> None:
        self.engine.counters["dropped"] += 1
        last, since = self._drops.get(pipeline, (0.0, 0))
        now = time.monotonic()
        if now - last < 1.0 / DROP_EVENTS_PER_S:
            self._drops[pipeline] = (last, since + 1)
            return
        self._drops[pipeline] = (now, 0)
        more = f" ({since} more runs dropped since the last report)" if since else ""
        try:
            await self.engine._event(pipeline, run, stage, instance, "dropped", started,
                                     error_kind=exc.kind, error=f"{exc}{more}")  # fmt: skip
        except FadesError as err:
            log.warning("pipeline %s: dropped-run event not stored: %s", pipeline, err)
