"""Outcomes into the controller: the results consumer and the one place an outcome is stored.

Nodes publish :class:`~fades.outcome.Outcome` on ``fades.result.<node>``; the controller reads
them from a durable pull consumer (``controller``). An outcome names the task by its *wire
id* (unique across tenants); :class:`Recorder` maps it back to the tenant's own id, checks the
tenant, stores the first outcome per task (off the event loop) and wakes whoever waits.
Every message is acked after it is stored; a malformed one is dropped (``term``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from pydantic import ValidationError

from fades.bus.base import Bus
from fades.controller.metrics import Metrics
from fades.controller.models import Where
from fades.controller.store import ControllerStore
from fades.fabric.subjects import RESULTS_STREAM
from fades.outcome import Outcome

log = logging.getLogger("fades.controller")

#: the controller's durable consumer on the results stream
RESULTS_CONSUMER = "controller"


class Recorder:
    """Stores outcomes (first one wins) and wakes the waiters of a task."""

    def __init__(self, store: ControllerStore, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        #: (tenant, task id) -> the event set when its outcome is stored, and how many wait
        self._waiters: dict[tuple[str, str], tuple[asyncio.Event, int]] = {}
        #: called with each new outcome once stored (e.g. the placer's measurements)
        self.observers: list[Callable[[Outcome], None]] = []

    @contextlib.contextmanager
    def waiting(self, tenant: str, task_id: str) -> Iterator[asyncio.Event]:
        """The event set once the task's outcome is stored; forgotten when nobody waits
        (so waits on unknown or unfinished tasks leave nothing behind)."""
        key = (tenant, task_id)
        event, n = self._waiters.get(key, (asyncio.Event(), 0))
        self._waiters[key] = (event, n + 1)
        try:
            yield event
        finally:
            event, n = self._waiters.get(key, (event, 1))
            if n <= 1:
                self._waiters.pop(key, None)
            else:
                self._waiters[key] = (event, n - 1)

    @property
    def waiting_count(self) -> int:
        return len(self._waiters)

    async def record(self, out: Outcome, where: Where, bytes_uplink: int | None = None) -> bool:
        """Store ``out`` (keyed by its tenant and task id); False for a duplicate."""
        new = await asyncio.to_thread(self.store.add_outcome, out, bytes_uplink=bytes_uplink)
        if not new:
            self.metrics.duplicates.inc()
            log.debug("duplicate outcome for task %s ignored", out.task_id)
            return False
        self.metrics.results.labels(where, out.status).inc()
        for observe in self.observers:
            try:
                observe(out)
            except Exception:
                log.exception("an outcome observer failed")
        latency = out.timing.get("latency")
        with contextlib.suppress(Exception):
            rec = await asyncio.to_thread(self.store.get, out.task_id, out.tenant)
            latency = rec.latency_s
        if latency is not None:
            self.metrics.latency.labels(where).observe(latency)
        waiting = self._waiters.get((out.tenant, out.task_id))
        if waiting is not None:
            waiting[0].set()
        return True

    async def from_node(self, data: bytes, subject: str) -> bool | None:
        """Record an outcome a node published; None if it is malformed or names no task of
        ours (dropped), else whether it was new."""
        try:
            out = Outcome.decode(data)
        except ValidationError as exc:
            log.warning("dropping a malformed outcome on %s: %s", subject, exc.errors()[0]["msg"])
            return None
        key = await asyncio.to_thread(self.store.by_wire_id, out.task_id)
        if key is None or key[0] != out.tenant:
            log.warning("dropping an outcome on %s for an unknown task %r", subject, out.task_id)
            return None
        return await self.record(out.model_copy(update={"task_id": key[1]}), "edge", len(data))


async def consume(bus: Bus, recorder: Recorder) -> None:
    """Store outcomes from the durable consumer until cancelled (or the bus closes)."""
    async for d in bus.consume(RESULTS_STREAM, RESULTS_CONSUMER, "fades.result.>"):
        try:
            stored = await recorder.from_node(d.data, d.subject)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database failed: not acked, so redelivered later
            log.exception("could not store an outcome on %s", d.subject)
            continue
        with contextlib.suppress(Exception):  # unacked: redelivered, then ignored
            await (d.term() if stored is None else d.ack())
