"""Bundles on the Bus: a pipeline's stream (bounded by its queue), publishing a stage's
result to a downstream instance, reading a bundle's value back, and stage events.

A bundle's value travels inline up to :data:`~fades.pipelines.protocol.INLINE_MAX` bytes of
JSON; a larger one is put in the object store :data:`~fades.pipelines.protocol.BUNDLE_OBJECTS`
under the bundle's identity first, and the bundle carries only its name (the object is
deleted once the consuming stage has acked it). Message ids make both idempotent: a stage
that runs twice publishes the same ids, and JetStream keeps the first.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fades.bus.base import Bus, ObjectStore
from fades.errors import FabricError
from fades.pipelines.protocol import (
    BUNDLE_OBJECTS,
    INLINE_MAX,
    Bundle,
    Plan,
    StageEvent,
    bundle_stream,
    bundle_subject,
    ensure_events_stream,
    events_subject,
)
from fades.pipelines.routing import CONTEXT_INPUT
from fades.pipelines.spec import QueueSpec

log = logging.getLogger("fades.pipelines")


def is_stage_task(task: dict[str, Any]) -> bool:
    """True for a task the pipeline engine submitted (its outcome is a stage event, not a
    result for the controller)."""
    inputs = task.get("inputs")
    return isinstance(inputs, dict) and CONTEXT_INPUT in inputs


def encoded_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


#: bytes of a stage event besides a final stage's result (its names, timing, counts)
EVENT_HEADROOM = 4096


def finale_too_big(value: Any, max_payload: int, stage: str) -> str | None:
    """Why a final stage's result cannot travel in its event (one fabric message), or None."""
    limit = max_payload - EVENT_HEADROOM
    size = encoded_size(value)
    if size <= limit:
        return None
    return (
        f"stage {stage!r}: its result is {size:,} bytes of JSON; a final stage's result "
        f"travels in its event, at most {limit:,} bytes (the fabric's largest message less "
        f"{EVENT_HEADROOM:,})"
    )


def object_name(bundle: Bundle) -> str:
    return f"{bundle.pipeline}/{bundle.msg_id()}"


class BundleIO:
    """One node's side of the bundle streams, the object store and the events stream.

    ``bus`` holds the bundle streams and objects (a site pipeline's: the site's domain);
    ``up`` is where stage events go (:meth:`Bus.publish_up`), ``bus`` if not given.
    """

    def __init__(self, bus: Bus, up: Bus | None = None) -> None:
        self.bus = bus
        self.up = up if up is not None else bus
        self._streams: dict[str, tuple[int, int, str]] = {}
        self._objects: ObjectStore | None = None
        self._events = False

    async def ensure(self, plan: Plan) -> None:
        """The pipeline's bundle stream, bounded as its spec's queue says (idempotent)."""
        q = QueueSpec.model_validate(plan.spec.get("queue") or {})
        discard = "new" if q.when_full == "refuse" else "old"
        want = (q.max_runs, q.max_bytes, discard)
        if self._streams.get(plan.pipeline) == want:
            return
        await self.bus.stream(
            bundle_stream(plan.pipeline),
            [f"fades.bundle.{plan.pipeline}.>"],
            max_msgs_per_subject=q.max_runs,
            max_bytes=q.max_bytes,
            discard="new" if discard == "new" else "old",
        )
        self._streams[plan.pipeline] = want

    async def objects(self) -> ObjectStore:
        if self._objects is None:
            self._objects = await self.bus.objects(BUNDLE_OBJECTS)
        return self._objects

    async def send(self, bundle: Bundle, value: Any) -> int:
        """Publish ``bundle`` carrying ``value`` (through the object store if large); returns
        the value's size in bytes.

        Raises:
            QueueFull: the downstream queue is full and the pipeline refuses new runs.
            FabricError: not stored.
        """
        size = 0 if bundle.skipped else encoded_size(value)
        if size > INLINE_MAX:
            name = object_name(bundle)
            await (await self.objects()).put(name, json.dumps(value).encode())
            bundle = bundle.model_copy(update={"value": None, "object": name, "bytes": size})
        else:
            bundle = bundle.model_copy(update={"value": value, "bytes": size})
        await self.bus.publish(
            bundle_subject(bundle.pipeline, bundle.stage, bundle.instance),
            bundle.encode(),
            msg_id=bundle.msg_id(),
        )
        return size

    async def value(self, bundle: Bundle) -> Any:
        """A received bundle's value (fetched from the object store if it went there).

        Raises:
            FabricError: its object is gone (already consumed and deleted) or unreachable.
        """
        if bundle.object is None:
            return bundle.value
        data = await (await self.objects()).get(bundle.object)
        if data is None:
            raise FabricError(f"bundle {bundle.msg_id()}: its value {bundle.object} is gone")
        return json.loads(data)

    async def forget(self, bundle: Bundle) -> None:
        """Delete a consumed bundle's object (if it had one)."""
        if bundle.object is not None:
            try:
                await (await self.objects()).delete(bundle.object)
            except FabricError as exc:
                log.info("bundle object %s not deleted: %s", bundle.object, exc)

    async def event(self, ev: StageEvent) -> None:
        """Store a stage event (de-duplicated by run, stage, instance and status)."""
        if not self._events:
            try:
                await ensure_events_stream(self.up)
                self._events = True
            except FabricError as exc:  # the hub is out of reach: publish_up may store it
                log.info("events stream not checked: %s", exc)
        await self.up.publish_up(events_subject(ev.pipeline), ev.encode(), msg_id=ev.msg_id())
