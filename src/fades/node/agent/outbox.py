"""The result outbox: every finished or failed task reaches ``fades.result.<node>`` at least
once, as an :class:`~fades.outcome.Outcome` (message id ``<task id>.result``).

The outbox is the ``delivered`` column of the node's task store: a result counts as delivered
once the fabric acknowledged it. The orchestrator's finish callback (a worker thread) hands
the finished record to the event loop, which publishes whatever has finished meanwhile (at
most :data:`OUTBOX_INFLIGHT` awaiting the fabric at once) and marks the acknowledged ones
delivered with one commit; results left undelivered (fabric down, a crash) are re-published
on start and on every heartbeat. The heartbeat's sweep skips the results the outbox loop holds
or is publishing right now (under a burst it would publish them a second time); what it
publishes is claimed, so that a finish callback arriving after the sweep's read (the end was
committed just before it) does not make the loop publish it again. The sweep is not
run at all while the loop is publishing and nothing failed (at most every
:data:`SWEEP_BUSY_EVERY_S` then). A lone result is published straight away. Readers
de-duplicate by task id (the message id too).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING

from fades.errors import Fenced, OrchestratorError
from fades.fabric.subjects import result_subject
from fades.node.taskstore import TaskRecord
from fades.outcome import Outcome
from fades.pipelines.bundles import is_stage_task

if TYPE_CHECKING:
    from fades.node.agent import NodeAgent

log = logging.getLogger("fades.node.agent")

#: room left in a message for headers and framing
HEADROOM = 4096
#: the most results awaiting the fabric's acknowledgement at once
OUTBOX_INFLIGHT = 32
#: the most finished tasks read, published and marked delivered (one commit) together
OUTBOX_BATCH = 128
#: while the loop is publishing and nothing failed, the heartbeat's sweep (a read of every
#: undelivered result) runs at most this often
SWEEP_BUSY_EVERY_S = 10.0
#: how long a sweep's claim on a result it publishes is kept for a finish callback that may
#: still hand the same result to the loop (the callback runs just after the end's commit)
CLAIM_KEEP_S = 60.0


class Outbox:
    """Publishes the outcomes of one agent's tasks."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: asyncio.Queue[TaskRecord] = asyncio.Queue()
        self._lock = asyncio.Lock()
        # records finished in worker threads, handed to the loop by one wake-up per burst
        self._handed: list[TaskRecord] = []
        self._handing = threading.Lock()
        # ids of the records handed to the loop and not yet published or given up on (the
        # sweep leaves them to the loop); guarded by _handing
        self._held: set[str] = set()
        # while a sweep reads the store: ids the loop finished with meanwhile (it may have
        # published one after the sweep's read and before its second look at _held)
        self._left: set[str] | None = None
        # ids a sweep publishes (or published), with when it claimed them: a finish callback
        # that comes after the sweep read the result (its end was committed just before) must
        # not make the loop publish it again; guarded by _handing
        self._claimed: dict[str, float] = {}
        #: wake-ups of the event loop by finish callbacks (for tests and the benchmark)
        self.wakeups = 0
        # a result was not delivered since the last sweep (the next sweep must look)
        self._missed = False
        self._swept = time.monotonic()  # of the last sweep's read (start flushes)
        #: sweeps the heartbeat skipped while the loop was publishing (for tests)
        self.sweeps_skipped = 0

    def bind(self) -> None:
        """Remember the running loop (callbacks from worker threads post to it)."""
        self._loop = asyncio.get_running_loop()
        with self._handing:  # (left by a closed loop: the start sweep re-publishes them)
            self._handed.clear()
            self._held.clear()

    def on_finish(self, rec: TaskRecord) -> None:
        """Orchestrator callback (worker thread): hand the finished record (read after its
        end was committed) to the event loop, which publishes it without reading it again."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._handing:
            self._handed.append(rec)
            self._held.add(rec.id)
            if len(self._handed) > 1:
                return  # a wake-up is on its way and takes this one too
        self.wakeups += 1
        try:
            loop.call_soon_threadsafe(self._take)
        except RuntimeError:  # the loop closed meanwhile; the outbox (the store) has them
            with self._handing:
                self._handed.clear()
                self._held.clear()

    def _take(self) -> None:
        """(event loop) Queue what the finish callbacks handed over since the last wake-up."""
        with self._handing:
            recs, self._handed = self._handed, []
        for rec in recs:
            self._finished.put_nowait(rec)

    def encode(self, outcome: Outcome) -> bytes:
        """The wire form; a result too big for one message becomes a failure saying so."""
        data = outcome.encode()
        limit = self.agent.require_bus().max_payload - HEADROOM
        if len(data) > limit:
            data = outcome.model_copy(
                update={
                    "status": "failed",
                    "result": None,
                    "logs": None,
                    "error_kind": OrchestratorError.__name__,
                    "error": f"the result ({len(data)} bytes) exceeds the fabric's "
                    f"message limit ({limit} bytes); return less data",
                }
            ).encode()
        return data

    async def send(self, outcome: Outcome) -> None:
        """Publish one outcome (raises FabricError if the fabric did not store it)."""
        await self.agent.require_bus().publish_up(
            result_subject(self.agent.name),
            self.encode(outcome),
            msg_id=f"{outcome.task_id}.result",
        )

    async def publish(self, rec: TaskRecord) -> bool:
        """Publish one finished record; True once the fabric acknowledged it (see
        :meth:`publish_many`)."""
        return await self.publish_many([rec]) == 1

    async def publish_many(self, recs: list[TaskRecord]) -> int:
        """Publish finished records, at most :data:`OUTBOX_INFLIGHT` awaiting the fabric's
        acknowledgement at once; mark those acknowledged delivered with one commit. Returns
        how many were delivered (a failed one stays in the outbox for the sweep).

        A pipeline stage's task is not the controller's: its outcome goes out as a stage
        event (the pipeline engine), so it is only marked delivered here. A stateful task
        stopped because another node holds it now (``Fenced``) lives on there: its stale
        copy's end is not the task's outcome, so nothing is sent either."""
        store = self.agent.require_node().orchestrator.store
        done: list[str] = []
        send: list[TaskRecord] = []
        for rec in recs:
            if is_stage_task(rec.task) or rec.error_kind == Fenced.__name__:
                done.append(rec.id)
            else:
                send.append(rec)
        if len(send) == 1:  # a lone result goes straight out (no task for the gather)
            if await self._send_one(send[0]):
                done.append(send[0].id)
        else:
            for i in range(0, len(send), OUTBOX_INFLIGHT):
                part = send[i : i + OUTBOX_INFLIGHT]
                acked = await asyncio.gather(*(self._send_one(r) for r in part))
                done.extend(r.id for r, ok in zip(part, acked, strict=True) if ok)
        if done:  # (in a thread: the store's lock and its checkpoints may wait)
            await asyncio.to_thread(store.mark_delivered_many, done)
        return len(done)

    async def _send_one(self, rec: TaskRecord) -> bool:
        try:
            await self.send(rec.outcome(self.agent.name))
        except Exception as exc:
            self._missed = True
            log.debug("node %s: result %s not delivered yet: %r", self.agent.name, rec.id, exc)
            return False
        self.agent.counters["published"] += 1
        return True

    async def loop(self) -> None:
        while True:
            recs = [await self._finished.get()]
            while len(recs) < OUTBOX_BATCH and not self._finished.empty():
                recs.append(self._finished.get_nowait())
            with self._handing:  # the ones a sweep claimed are its own
                mine = [r for r in recs if self._claimed.pop(r.id, None) is None]
            try:
                await self.publish_many([r for r in mine if r.done and not r.delivered])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # they stay in the outbox for the sweep
                self._missed = True
                log.warning("node %s: results %s: %r", self.agent.name, recs[0].id, exc)
            finally:
                with self._handing:  # published, or left to the sweep
                    self._held.difference_update(r.id for r in recs)
                    if self._left is not None:
                        self._left.update(r.id for r in recs)

    async def sweep(self) -> None:
        """The heartbeat's :meth:`flush`, skipped while the loop holds results to publish and
        none failed since the last sweep (then every undelivered result is one the loop is
        about to publish), but at least every :data:`SWEEP_BUSY_EVERY_S`."""
        with self._handing:
            busy = bool(self._held)
        if busy and not self._missed and time.monotonic() - self._swept < SWEEP_BUSY_EVERY_S:
            self.sweeps_skipped += 1
            return
        await self.flush()

    async def flush(self) -> None:
        """Re-publish every undelivered result (stops at the first burst with a failure)."""
        if self._lock.locked():
            return  # a sweep is already running
        async with self._lock:
            self._missed = False  # (a failure from now on is seen by the next sweep)
            self._swept = time.monotonic()
            store = self.agent.require_node().orchestrator.store
            with self._handing:  # held before the read: the loop may deliver them meanwhile
                held = set(self._held)
                self._left = set()
            recs: list[TaskRecord] = []
            try:
                recs = await asyncio.to_thread(store.undelivered)
            finally:
                with self._handing:  # the loop publishes those itself, or did meanwhile
                    held |= self._held | (self._left or set())
                    self._left = None
                    recs = [r for r in recs if r.id not in held]
                    now = time.monotonic()
                    self._claimed = {
                        k: t for k, t in self._claimed.items() if now - t < CLAIM_KEEP_S
                    }
                    self._claimed.update((r.id, now) for r in recs)  # ours from here on
            for i in range(0, len(recs), OUTBOX_BATCH):
                part = recs[i : i + OUTBOX_BATCH]
                if await self.publish_many(part) < len(part):
                    self._missed = True  # the next sweep looks again, claims or not
                    break
