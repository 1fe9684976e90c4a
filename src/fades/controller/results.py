"""Outcomes into the controller: the results consumer and the one place an outcome is stored.

Nodes publish :class:`~fades.outcome.Outcome` on ``fades.result.<node>``; the controller reads
them from a durable pull consumer (``controller``). An outcome names the task by its *wire
id* (unique across tenants); :class:`Recorder` maps it back to the tenant's own id, checks the
tenant, stores the first outcome per task (through the controller log,
:mod:`fades.controller.replica`: decided by log order, the same on every controller) and
wakes whoever waits, including the result streams (``listeners``). The wake-up comes from
the log being applied (:meth:`Recorder.applied`), so a long-poll on any controller wakes for
an outcome another controller received. A waiter is handed the outcome as it was stored
(:class:`Waiter`), so a long-poll answers without reading it back from the database.

Every controller reads the results stream through the same durable consumer, so each
outcome is handled by one of them.

The consumer fetches outcomes in batches (:data:`FETCH_BATCH`) and stores up to
:data:`MAX_INFLIGHT` of them at once, so a burst of outcomes becomes one commit. Every message
is acked after it is stored; a malformed one is dropped (``term``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import ValidationError

from fades.bus.base import Bus, Delivery
from fades.controller.metrics import Metrics
from fades.controller.models import Where
from fades.controller.replica import DirectLog, Log
from fades.controller.store import ControllerStore, StoredOutcome, TaskRecord
from fades.fabric.subjects import RESULTS_STREAM
from fades.outcome import Outcome

log = logging.getLogger("fades.controller")

#: the controller's durable consumer on the results stream
RESULTS_CONSUMER = "controller"
#: outcomes fetched from the results stream per pull
FETCH_BATCH = 256
#: outcomes being stored at the same time by the consumer
MAX_INFLIGHT = 512

#: called with every newly stored outcome (on the event loop; must not block)
Listener = Callable[[StoredOutcome], None]


class Waiter(asyncio.Event):
    """Set once the task's outcome is stored (committed); ``stored`` is then that outcome
    and ``bytes_uplink`` the size it arrived with (None: none measured)."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: StoredOutcome | None = None
        self.bytes_uplink: int | None = None

    def record(self, rec: TaskRecord) -> TaskRecord:
        """``rec`` (read before the outcome was stored) as the database now holds it."""
        if self.stored is None:
            return rec
        out = self.stored.outcome
        return dataclasses.replace(
            rec,
            status=out.status,
            outcome=out,
            latency_s=self.stored.latency_s,
            bytes_uplink=self.bytes_uplink,
        )


class Recorder:
    """Stores outcomes (first one wins) and wakes the waiters of a task."""

    def __init__(self, store: ControllerStore, metrics: Metrics, writes: Log | None = None) -> None:
        self.store = store
        self.metrics = metrics
        #: the controller log every write goes through
        self.commits: Log = writes or DirectLog(store)
        self.commits.hooks.append(self.applied)
        #: called with every newly stored outcome (the result streams)
        self.listeners: list[Listener] = []
        #: (tenant, task id) -> the event set when its outcome is stored, and how many wait
        self._waiters: dict[tuple[str, str], tuple[Waiter, int]] = {}
        #: called with each new outcome once stored (e.g. the placer's measurements)
        self.observers: list[Callable[[Outcome], None]] = []

    @contextlib.contextmanager
    def waiting(self, tenant: str, task_id: str) -> Iterator[Waiter]:
        """The event set once the task's outcome is stored; forgotten when nobody waits
        (so waits on unknown or unfinished tasks leave nothing behind)."""
        key = (tenant, task_id)
        event, n = self._waiters.get(key, (Waiter(), 0))
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
        stored = await self.commits.write(
            "add_outcome",
            {
                "outcome": out.model_dump(mode="json"),
                "bytes_uplink": bytes_uplink,
                "stored_at": time.time(),
                "where": where,
            },
        )
        return self._counted(stored)

    def _counted(self, stored: Any) -> bool:
        if stored is None:
            self.metrics.duplicates.inc()
            log.debug("duplicate outcome ignored")
            return False
        return True

    def applied(self, op: str, args: dict[str, Any], result: Any) -> None:
        """The log applied ``op`` here (whoever wrote it): wake those waiting for an outcome."""
        if op in ("add_outcome", "node_outcome") and isinstance(result, StoredOutcome):
            where: Where = "cloud" if args.get("where") == "cloud" else "edge"
            self._stored(result, where, args.get("bytes_uplink"))

    def _stored(self, stored: StoredOutcome, where: Where, bytes_uplink: int | None = None) -> None:
        out = stored.outcome
        self.metrics.child(self.metrics.results, where, out.status).inc()
        for observe in self.observers:
            try:
                observe(out)
            except Exception:
                log.exception("an outcome observer failed")
        if stored.latency_s is not None:
            self.metrics.child(self.metrics.latency, where).observe(stored.latency_s)
        waiting = self._waiters.get((out.tenant, out.task_id))
        if waiting is not None:
            waiting[0].stored = stored
            waiting[0].bytes_uplink = bytes_uplink
            waiting[0].set()
        for listener in self.listeners:
            try:
                listener(stored)
            except Exception:  # a stream's bug must not stop outcomes being recorded
                log.exception("a result listener failed")

    async def from_node(self, data: bytes, subject: str) -> bool | None:
        """Record an outcome a node published; None if it is malformed or names no task of
        ours (dropped), else whether it was new."""
        try:
            out = Outcome.decode(data)
        except ValidationError as exc:
            log.warning("dropping a malformed outcome on %s: %s", subject, exc.errors()[0]["msg"])
            return None
        # applied here only (no log on the fabric): the validated outcome itself, not its
        # JSON form validated again by the operation
        direct = isinstance(self.commits, DirectLog)
        stored = await self.commits.write(
            "node_outcome",
            {
                "outcome": out if direct else out.model_dump(mode="json"),
                "bytes_uplink": len(data),
                "stored_at": time.time(),
                "where": "edge",
            },
        )
        if stored is False:
            log.warning("dropping an outcome on %s for an unknown task %r", subject, out.task_id)
            return None
        return self._counted(stored)


async def consume(bus: Bus, recorder: Recorder) -> None:
    """Store outcomes from the durable consumer until cancelled (or the bus closes)."""
    slots = asyncio.Semaphore(MAX_INFLIGHT)
    running: set[asyncio.Task[None]] = set()

    async def handle(d: Delivery) -> None:
        try:
            stored = await recorder.from_node(d.data, d.subject)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database failed: not acked, so redelivered later
            log.exception("could not store an outcome on %s", d.subject)
            return
        finally:
            slots.release()
        with contextlib.suppress(Exception):  # unacked: redelivered, then ignored
            await (d.term() if stored is None else d.ack())

    try:
        async for d in bus.consume(
            RESULTS_STREAM, RESULTS_CONSUMER, "fades.result.>", batch=FETCH_BATCH
        ):
            await slots.acquire()
            t = asyncio.create_task(handle(d))
            running.add(t)
            t.add_done_callback(running.discard)
    finally:
        for t in list(running):
            t.cancel()
