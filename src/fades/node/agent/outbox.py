"""The result outbox: every finished or failed task reaches ``fades.result.<node>`` at least
once, as an :class:`~fades.outcome.Outcome` (message id ``<task id>.result``).

The outbox is the ``delivered`` column of the node's task store: a result counts as delivered
once the fabric acknowledged it. The orchestrator's finish callback (a worker thread) hands
the task id to the event loop, which publishes it; results left undelivered (fabric down, a
crash) are re-published on start and on every heartbeat. Readers de-duplicate by task id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from fades.errors import FadesError, Fenced, OrchestratorError
from fades.fabric.subjects import result_subject
from fades.node.taskstore import TaskRecord
from fades.outcome import Outcome
from fades.pipelines.bundles import is_stage_task

if TYPE_CHECKING:
    from fades.node.agent import NodeAgent

log = logging.getLogger("fades.node.agent")

#: room left in a message for headers and framing
HEADROOM = 4096


class Outbox:
    """Publishes the outcomes of one agent's tasks."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: asyncio.Queue[str] = asyncio.Queue()
        self._lock = asyncio.Lock()

    def bind(self) -> None:
        """Remember the running loop (callbacks from worker threads post to it)."""
        self._loop = asyncio.get_running_loop()

    def on_finish(self, rec: TaskRecord) -> None:
        """Orchestrator callback (worker thread): hand the task id to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile; the outbox has it
            loop.call_soon_threadsafe(self._finished.put_nowait, rec.id)

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
        """Publish one finished record; mark it delivered once the fabric acknowledged it.

        A pipeline stage's task is not the controller's: its outcome goes out as a stage
        event (the pipeline engine), so it is only marked delivered here. A stateful task
        stopped because another node holds it now (``Fenced``) lives on there: its stale
        copy's end is not the task's outcome, so nothing is sent either."""
        store = self.agent.require_node().orchestrator.store
        if is_stage_task(rec.task) or rec.error_kind == Fenced.__name__:
            await asyncio.to_thread(store.mark_delivered, rec.id)
            return True
        try:
            await self.send(rec.outcome(self.agent.name))
        except Exception as exc:
            log.debug("node %s: result %s not delivered yet: %r", self.agent.name, rec.id, exc)
            return False
        await asyncio.to_thread(self.agent.require_node().orchestrator.store.mark_delivered, rec.id)
        self.agent.counters["published"] += 1
        return True

    async def loop(self) -> None:
        while True:
            task_id = await self._finished.get()
            try:
                rec = await asyncio.to_thread(self.agent.require_node().orchestrator.get, task_id)
                if rec.done and not rec.delivered:
                    await self.publish(rec)  # a failure stays in the outbox for the sweep
            except FadesError as exc:
                log.warning("node %s: result %s: %s", self.agent.name, task_id, exc)

    async def flush(self) -> None:
        """Re-publish every undelivered result (stops at the first failure)."""
        if self._lock.locked():
            return  # a sweep is already running
        async with self._lock:
            store = self.agent.require_node().orchestrator.store
            for rec in await asyncio.to_thread(store.undelivered):
                if not await self.publish(rec):
                    break
