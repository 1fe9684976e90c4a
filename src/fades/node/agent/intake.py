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
import os
import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fades.aiostop import cancel_all
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
#: default for the most tasks pulled per request and stored with one commit
#: (``FADES_NODE_INTAKE_BATCH`` overrides it; 1 restores one task per pull and commit)
INTAKE_BATCH = 64
#: the most digests remembered as fetched and verified in this process
READY_MAX = 4096


def intake_batch() -> int:
    """``FADES_NODE_INTAKE_BATCH`` (an integer from 1 to 1024), else :data:`INTAKE_BATCH`."""
    text = os.environ.get("FADES_NODE_INTAKE_BATCH", "").strip()
    if not text:
        return INTAKE_BATCH
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"FADES_NODE_INTAKE_BATCH must be an integer, got {text!r}") from None
    if not 1 <= value <= 1024:
        raise ValueError(f"FADES_NODE_INTAKE_BATCH must be from 1 to 1024, got {value}")
    return value


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# errors that leave a task for later (the message is not acked and comes back)
_TRANSIENT: tuple[type[BaseException], ...] = (FabricError, TimeoutError, OSError)


def _refusal(exc: BaseException) -> bool:
    """True if ``exc`` means the task itself cannot run here (answer it with a failed result)."""
    return isinstance(exc, (TaskError, ArtifactError, BrokerError))


class Intake:
    """Consumes one agent's tasks, a burst at a time.

    A reader task pulls up to :data:`INTAKE_BATCH` messages per request into a bounded queue;
    the handler takes everything queued (at most :data:`INTAKE_BATCH`), stores the whole
    burst with one commit
    (:meth:`~fades.node.orchestrator.Orchestrator.submit_many`), and only then acks each."""

    def __init__(self, agent: NodeAgent, batch: int | None = None) -> None:
        self.agent = agent
        self.batch = batch if batch is not None else intake_batch()
        if self.batch < 1:
            raise ValueError(f"intake batch must be at least 1, got {self.batch}")
        # digests this process already fetched and verified (keyed by digest; bounded)
        self._ready: set[str] = set()

    async def loop(self) -> None:
        a = self.agent
        while not a.stopping:
            deliveries = a.require_bus().consume(
                TASKS_STREAM,
                f"node-{a.name}",
                task_subject(a.name),
                ack_wait=ACK_WAIT_S,
                batch=self.batch,
            )
            queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=self.batch)
            reader = asyncio.create_task(self._read(deliveries, queue))
            try:
                while not a.stopping:
                    get = asyncio.ensure_future(queue.get())
                    await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                    if not get.done():
                        get.cancel()
                        break  # the consumer ended
                    burst = [get.result()]
                    while len(burst) < self.batch and not queue.empty():
                        burst.append(queue.get_nowait())
                    await self.handle_burst(burst)
                if a.stopping:
                    return
                exc = reader.exception() if reader.done() and not reader.cancelled() else None
                if isinstance(exc, FabricError):  # the bus gave up on this consumer
                    log.warning("node %s: consuming tasks failed: %s", a.name, exc)
                elif exc is not None:
                    raise exc
            finally:
                await cancel_all([reader])
            await asyncio.sleep(BACKOFF_S)

    @staticmethod
    async def _read(deliveries: AsyncIterator[Delivery], queue: asyncio.Queue[Delivery]) -> None:
        async for d in deliveries:
            await queue.put(d)  # waits while a full burst is being stored (un-acked meanwhile)

    async def handle(self, d: Delivery) -> None:
        """Submit one task, answer a refused one, ack only when the node holds an answer."""
        await self.handle_burst([d])

    async def handle_burst(self, burst: list[Delivery]) -> None:
        """Store a burst of tasks with one commit; ack each only once the node holds it (or
        its answer); refuse the ones that cannot run here; leave the rest for later."""
        a = self.agent
        a.counters["received"] += len(burst)
        parsed: list[tuple[Delivery, dict[str, Any], str, str, str | None]] = []
        for d in burst:
            try:
                env = TaskEnvelope.decode(d.data)
            except FabricError as exc:
                if d.msg_id:
                    await self._refuse(d, d.msg_id, "", None, exc)
                else:
                    log.warning("node %s: dropping an unreadable task message: %s", a.name, exc)
                    with contextlib.suppress(Exception):
                        await d.term()
                continue
            raw = dict(env.task)
            creds = raw.get("credentials")
            if isinstance(creds, dict) and "task_id" not in creds and d.msg_id:
                raw["credentials"] = {**creds, "task_id": d.msg_id}  # redeliveries idempotent
                creds = raw["credentials"]
            task_id = str(creds.get("task_id")) if isinstance(creds, dict) else (d.msg_id or "")
            tenant = str(creds.get("tenant", "")) if isinstance(creds, dict) else ""
            parsed.append((d, raw, task_id, tenant, env.digest))
        if not parsed:
            return
        orc = a.require_node().orchestrator
        # (no look-up of redeliveries first: the store's key refuses a task held already,
        # and only then is it checked; one thread hop less for every burst)
        todo: list[tuple[Delivery, dict[str, Any], str, str, str | None]] = []
        checked: set[str] = set()  # digests found on disk in this burst (one stat each)
        for d, raw, task_id, tenant, digest in parsed:
            try:
                raw = await self._pin(raw, digest, d, checked)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(d, task_id, tenant, digest, exc)
                continue
            todo.append((d, raw, task_id, tenant, digest))
        if not todo:
            return
        tasks = [t[1] for t in todo]
        try:
            # (in a thread even for a lone task: stored on the loop, the task's worker thread
            # then waits for the GIL while the loop acks; measured, the run started ~0.6 ms
            # later, as much as the two thread hand-offs save)
            results = await asyncio.to_thread(orc.submit_many, tasks)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the commit failed: nothing of the burst is held
            results = [exc for _ in todo]
        stored: set[str] = set()
        for (d, _, task_id, tenant, digest), res in zip(todo, results, strict=True):
            if isinstance(res, Exception) and task_id in stored:  # twice in this burst
                a.counters["duplicates"] += 1
                log.info("node %s: task %s redelivered; already held", a.name, task_id)
                await self._ack(d)
            elif isinstance(res, Exception):
                await self._failed(d, task_id, tenant, digest, res)
            else:
                stored.add(task_id)
                a.counters["accepted"] += 1
                await self._ack(d)

    async def _failed(
        self, d: Delivery, task_id: str, tenant: str, digest: str | None, exc: Exception
    ) -> None:
        """A task that was not stored: ack it if held after all, else answer, drop or retry."""
        a = self.agent
        try:
            held = await self._held(task_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            held = False
        if held:  # accepted by an earlier delivery: a redelivery
            a.counters["duplicates"] += 1
            log.info("node %s: task %s redelivered; already held", a.name, task_id)
            await self._ack(d)
        elif not task_id:
            log.warning("node %s: dropping a task without an id: %s", a.name, exc)
            with contextlib.suppress(Exception):
                await d.term()
        elif _refusal(exc):
            await self._refuse(d, task_id, tenant, digest, exc)
        elif isinstance(exc, _TRANSIENT) or a.stopping:
            log.warning("node %s: task %s left for later: %r", a.name, task_id, exc)
            with contextlib.suppress(Exception):
                await d.nak(delay=1.0)
        else:
            log.error(
                "node %s: task %s: unexpected failure at intake",
                a.name,
                task_id,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            await self._refuse(d, task_id, tenant, digest, exc)

    async def _pin(
        self,
        raw: dict[str, Any],
        pinned: str | None,
        d: Delivery,
        checked: set[str] | None = None,
    ) -> dict[str, Any]:
        """Fetch the function the task pins (and its runtime) and name it by digest.

        Without a pinned digest (an older sender), a name the repository holds is resolved
        there; a name it lacks is left for a function installed on this node only.
        ``checked``: digests already found on disk in this burst (not looked at again).
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
        if checked is not None and digest in checked:
            pass
        elif digest not in self._ready or not self._on_disk(digest):
            await sync.artifact(digest, keepalive=d.in_progress)
            if len(self._ready) >= READY_MAX:
                self._ready.clear()
            self._ready.add(digest)
        if checked is not None:
            checked.add(digest)
        return {**raw, "function": {**fn, "artifact": digest}}

    def _on_disk(self, digest: str) -> bool:
        """The artifact's file is still here (the orchestrator verifies it again on use)."""
        store = self.agent.require_sync().store
        return (store.dir / f"{digest.removeprefix('sha256:')}.fart").exists()

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
