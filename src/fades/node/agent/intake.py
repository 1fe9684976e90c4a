"""Task intake: pull tasks from the durable consumer ``node-<name>`` on ``fades.task.<name>``.

For each task: make sure the function it pins (the envelope's ``digest``) and the runtime
it needs are held here, verified against the node's own trust store (:mod:`fades.fabric.sync`);
rewrite the task's ``function.artifact`` to that digest, so exactly that code runs; submit it
durably; and only then ack. A task the node refuses (invalid, unknown or untrusted function,
data it may not read) is answered at once with a failed :class:`~fades.outcome.Outcome`; a
redelivered task the node already holds is just acked; a fabric hiccup leaves the task for
later (nak, it comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from fades.bus.base import Delivery
from fades.errors import ArtifactError, BrokerError, FabricError, FadesError, TaskError
from fades.fabric.protocol import TaskEnvelope
from fades.fabric.subjects import TASKS_STREAM, task_subject
from fades.fabric.sync import DIGEST
from fades.outcome import Outcome

if TYPE_CHECKING:
    from fades.node.agent import NodeAgent

log = logging.getLogger("fades.node.agent")

#: seconds the fabric waits for an ack before redelivering a task
ACK_WAIT_S = 30.0
#: pause before consuming again after the consumer failed
BACKOFF_S = 0.5

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# errors that leave a task for later (the message is not acked and comes back)
_TRANSIENT: tuple[type[BaseException], ...] = (FabricError, TimeoutError, OSError)


def _refusal(exc: BaseException) -> bool:
    """True if ``exc`` means the task itself cannot run here (answer it with a failed result)."""
    return isinstance(exc, (TaskError, ArtifactError, BrokerError))


class Intake:
    """Consumes one agent's tasks."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    async def loop(self) -> None:
        a = self.agent
        while not a.stopping:
            deliveries = a.require_bus().consume(
                TASKS_STREAM, f"node-{a.name}", task_subject(a.name), ack_wait=ACK_WAIT_S
            )
            try:
                async for d in deliveries:
                    await self.handle(d)
                    if a.stopping:
                        return
            except FabricError as exc:  # the bus gave up on this consumer; open it again
                log.warning("node %s: consuming tasks failed: %s", a.name, exc)
            await asyncio.sleep(BACKOFF_S)

    async def handle(self, d: Delivery) -> None:
        """Submit one task, answer a refused one, ack only when the node holds an answer."""
        a = self.agent
        a.counters["received"] += 1
        try:
            env = TaskEnvelope.decode(d.data)
        except FabricError as exc:
            if d.msg_id:
                await self._refuse(d, d.msg_id, "", None, exc)
            else:
                log.warning("node %s: dropping an unreadable task message: %s", a.name, exc)
                with contextlib.suppress(Exception):
                    await d.term()
            return
        raw = dict(env.task)
        creds = raw.get("credentials")
        if isinstance(creds, dict) and "task_id" not in creds and d.msg_id:
            raw["credentials"] = {**creds, "task_id": d.msg_id}  # keep redeliveries idempotent
            creds = raw["credentials"]
        task_id = str(creds.get("task_id")) if isinstance(creds, dict) else (d.msg_id or "")
        tenant = str(creds.get("tenant", "")) if isinstance(creds, dict) else ""
        orc = a.require_node().orchestrator
        try:
            if await self._held(task_id):
                a.counters["duplicates"] += 1
                log.info("node %s: task %s redelivered; already held", a.name, task_id)
                await self._ack(d)
                return
            raw = await self._pin(raw, env.digest, d)
            await asyncio.to_thread(orc.submit, raw)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if await self._held(task_id):
                await self._ack(d)  # accepted by an earlier delivery after all
            elif not task_id:
                log.warning("node %s: dropping a task without an id: %s", a.name, exc)
                with contextlib.suppress(Exception):
                    await d.term()
            elif _refusal(exc):
                await self._refuse(d, task_id, tenant, env.digest, exc)
            elif isinstance(exc, _TRANSIENT) or a.stopping:
                log.warning("node %s: task %s left for later: %r", a.name, task_id, exc)
                with contextlib.suppress(Exception):
                    await d.nak(delay=1.0)
            else:
                log.exception("node %s: task %s: unexpected failure at intake", a.name, task_id)
                await self._refuse(d, task_id, tenant, env.digest, exc)
            return
        a.counters["accepted"] += 1
        await self._ack(d)

    async def _pin(self, raw: dict[str, Any], pinned: str | None, d: Delivery) -> dict[str, Any]:
        """Fetch the function the task pins (and its runtime) and name it by digest.

        Without a pinned digest (an older sender), a name the repository holds is resolved
        there; a name it lacks is left for a function installed on this node only.
        """
        fn = raw.get("function")
        ref = fn.get("artifact") if isinstance(fn, dict) else None
        if not isinstance(fn, dict) or not isinstance(ref, str):
            return raw  # submit names what is wrong
        sync = self.agent.require_sync()
        digest: str | None = pinned or None
        if digest is None:
            if not (DIGEST.match(ref) or _NAME.match(ref)):
                return raw
            digest = await sync.resolve(ref)
            if digest is None:
                return raw
        await sync.artifact(digest, keepalive=d.in_progress)
        return {**raw, "function": {**fn, "artifact": digest}}

    async def _held(self, task_id: str) -> bool:
        if not task_id:
            return False
        held: bool = await asyncio.to_thread(self.agent.require_node().orchestrator.exists, task_id)
        return held

    async def _ack(self, d: Delivery) -> None:
        try:
            await d.ack()
        except Exception as exc:  # it comes back and is then acked as already held
            log.warning(
                "node %s: ack failed (%r); the task will be redelivered", self.agent.name, exc
            )

    async def _refuse(
        self, d: Delivery, task_id: str, tenant: str, digest: str | None, exc: BaseException
    ) -> None:
        a = self.agent
        kind = exc.kind if isinstance(exc, FadesError) else type(exc).__name__
        log.info("node %s: refused task %s: %s: %s", a.name, task_id, kind, exc)
        outcome = Outcome(
            task_id=task_id,
            tenant=tenant,
            node=a.name,
            status="failed",
            error_kind=kind,
            error=str(exc),
            digest=digest or None,
            attempts=0,
            finished_at=time.time(),
        )
        try:
            await a.outbox.send(outcome)
        except Exception as pub:
            log.warning("node %s: could not answer refused task %s: %r", a.name, task_id, pub)
            with contextlib.suppress(Exception):
                await d.nak(delay=1.0)
            return
        a.counters["refused"] += 1
        await self._ack(d)
