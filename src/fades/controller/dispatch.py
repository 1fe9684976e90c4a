"""Dispatch: hand recorded edge tasks to their nodes over the fabric.

A task is published to ``fades.task.<node>`` as a :class:`~fades.fabric.protocol.TaskEnvelope`
with its wire id as the message id (JetStream drops a second publish with the same id, and a
node ignores a task id it already holds, so re-publishing is safe). The envelope pins the
artifact digest chosen at submit, and the task body it carries names that digest as its
``function.artifact``, so a node runs exactly that version whatever is uploaded meanwhile.

The tasks of a batch submit are published concurrently (their acknowledgements awaited
together), and the ``dispatched`` marks of the tasks whose acknowledgements arrived in the same
event-loop turn are written as one operation (``mark_dispatched_many``).

A task that can never be published (its envelope exceeds the fabric's message limit) fails
with :class:`~fades.errors.DispatchFailed` naming the limit; it never holds up the tasks
behind it. A fabric outage leaves tasks ``accepted``; the dispatcher retries them.

With several controllers, the one that accepted a task publishes it; the sweep for tasks
left ``accepted`` (a controller died between recording and publishing, or the fabric was
away) runs on the leading controller only (:mod:`fades.controller.leader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fades.aiostop import wait_for
from fades.controller.results import Recorder
from fades.controller.store import ControllerStore, PendingTask
from fades.errors import DispatchFailed, FabricError
from fades.fabric.subjects import task_subject
from fades.outcome import Outcome

log = logging.getLogger("fades.controller")

#: seconds between re-publish attempts of tasks accepted but not yet in JetStream
REDISPATCH_S = 1.0
#: seconds between sweeps while the last one found nothing to re-publish (a submit that
#: cannot publish, or a new lead, starts one at once)
REDISPATCH_IDLE_S = 5.0
#: bytes of a message kept for headers (message id) below the server's max_payload
HEADER_ROOM = 4096

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

#: ``publish(subject, data, msg_id)``; raises FabricError when the fabric does not store it
Publish = Callable[[str, bytes, str], Awaitable[None]]


def envelope(p: PendingTask) -> bytes:
    """The wire form of a pending task: wire id as its task id, the pinned digest as its
    artifact."""
    body: dict[str, Any] = dict(p.task)
    body["credentials"] = {**body.get("credentials", {}), "task_id": p.wire_id}
    if p.digest is not None:
        body["function"] = {**body.get("function", {}), "artifact": p.digest}
    if p.digest is not None and not _DIGEST.match(p.digest):
        raise ValueError(f"not an artifact digest: {p.digest!r}")
    # a TaskEnvelope's JSON, written directly (validating the task again costs more than this)
    env = {"task": body, "submitted_at": p.submitted_at, "origin": "controller", "digest": p.digest}
    return json.dumps(env, separators=(",", ":"), allow_nan=False).encode()


class Dispatcher:
    """Publishes pending edge tasks; one bad task fails alone.

    Args:
        store: the controller's store.
        recorder: where a task that cannot be dispatched gets its failed outcome.
        publish: ``publish(subject, data, msg_id)``; raises FabricError when the fabric is
            unreachable (the Bus translates every transport error into it).
        ready: whether the fabric is reachable now.
        limit: the largest message the fabric takes (bytes), asked each time.
        leads: whether this controller runs the sweep for tasks left ``accepted``.
    """

    def __init__(
        self,
        store: ControllerStore,
        recorder: Recorder,
        publish: Publish,
        ready: Callable[[], bool],
        limit: Callable[[], int],
        leads: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.publish = publish
        self.ready = ready
        self.limit = limit
        self.leads = leads
        self._inflight: set[tuple[str, str]] = set()
        self._kick = asyncio.Event()
        #: the marks gathered in this event-loop turn and the future their write settles
        self._marks: tuple[list[list[str]], asyncio.Future[None]] | None = None
        #: ``dispatched`` writes made (each marks one or more tasks; for tests)
        self.mark_writes = 0
        self._writing: set[asyncio.Future[None]] = set()

    def kick(self) -> None:
        """Run a dispatcher pass now."""
        self._kick.set()

    async def dispatch(self, p: PendingTask, data: bytes | None = None) -> bool:
        """Publish one recorded task; False if it must be retried (fabric unreachable).

        ``data``: its envelope already encoded (``envelope(p)``), to skip encoding it again."""
        if not self.ready():
            self._kick.set()
            return False  # stays 'accepted'; the dispatcher retries once the fabric is back
        try:
            data = envelope(p) if data is None else data
        except (TypeError, ValueError) as exc:  # a task recorded by an older version, say
            await self.fail(p, f"the task cannot be encoded for its node: {exc}")
            return True
        limit = self.limit() - HEADER_ROOM
        if len(data) > limit:
            await self.fail(
                p,
                f"the task's message ({len(data)} bytes) exceeds the fabric's limit "
                f"({limit} bytes); send less in function.params",
            )
            return True
        key = (p.tenant, p.id)
        self._inflight.add(key)
        try:
            await self.publish(task_subject(p.node), data, p.wire_id)
            await self._mark(p.tenant, p.id)
            return True
        except FabricError as exc:  # fabric down or slow: stays 'accepted' and is retried
            log.warning("task %s not dispatched yet (%s); retrying", p.id, exc)
            self._kick.set()
            return False
        finally:
            self._inflight.discard(key)

    async def _mark(self, tenant: str, task_id: str) -> None:
        """Record the task as dispatched, in one write with the others marked this turn."""
        if self._marks is None:
            loop = asyncio.get_running_loop()
            self._marks = ([], loop.create_future())
            loop.call_soon(self._write_marks)
        keys, done = self._marks
        keys.append([tenant, task_id])
        await asyncio.shield(done)

    def _write_marks(self) -> None:
        """(Next loop turn) write the marks gathered; settle their future with the result."""
        marks, self._marks = self._marks, None
        if marks is None:
            return
        keys, done = marks
        self.mark_writes += 1
        if len(keys) == 1:
            write = self.recorder.commits.write(
                "mark_dispatched", {"tenant": keys[0][0], "task_id": keys[0][1], "at": time.time()}
            )
        else:
            write = self.recorder.commits.write(
                "mark_dispatched_many", {"keys": keys, "at": time.time()}
            )

        async def run() -> None:
            try:
                await write
            except BaseException as exc:
                if not done.done():
                    done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                if not done.done():
                    done.set_result(None)

        task = asyncio.ensure_future(run())
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def fail(self, p: PendingTask, reason: str) -> None:
        """End a task that can never be dispatched, with ``reason``."""
        log.warning("task %s of %s cannot be dispatched: %s", p.id, p.tenant, reason)
        now = time.time()
        out = Outcome(
            task_id=p.id,
            tenant=p.tenant,
            node=p.node,
            status="failed",
            error_kind=DispatchFailed.__name__,
            error=reason,
            digest=p.digest,
            attempts=0,
            finished_at=now,
        )
        await self.recorder.record(out, "edge")

    async def run(self) -> None:
        """Re-publish tasks accepted but not yet handed over (restart, fabric outage)."""
        while True:
            busy = True  # something to re-publish (or a failed pass): try again soon
            self._kick.clear()  # (a kick during the pass starts the next one at once)
            try:
                pending = (
                    await asyncio.to_thread(self.store.pending, "edge", set(self._inflight))
                    if self.leads()
                    else []
                )
                busy = bool(pending)
                for p in pending:
                    if (p.tenant, p.id) in self._inflight:
                        continue  # its submit is publishing it right now
                    if not await self.dispatch(p):
                        # the fabric is unreachable: wait before trying the rest (not woken
                        # by the kick this failure gave)
                        self._kick.clear()
                        break
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. the database: log it and try again on the next pass
                log.exception("dispatcher pass failed")
            with contextlib.suppress(TimeoutError):
                await wait_for(self._kick.wait(), REDISPATCH_S if busy else REDISPATCH_IDLE_S)
