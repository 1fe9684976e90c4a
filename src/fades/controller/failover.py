"""Failover and draining: stateful tasks leave a node that is down, or about to be.

**Failover.** A watcher in the controller looks at the registry every
:data:`FAILOVER_EVERY_S`. When a node is marked down (no heartbeat for ``down_after``
seconds, or a clean stop), each of its unfinished stateful tasks restarts on another node
that is up, is not being drained and can serve it (the controller's placer: for the locality
placer, a node that holds the data the task reads): a forced move
(:func:`fades.controller.migrate.migrate` with ``force``) from the task's newest checkpoint.
The new instance's claim fences the old one: if the old node was only cut off or paused and
comes back, its next checkpoint write is refused (``Fenced``) and its copy stops, leaving
the task ``moved`` there. The invocations after the newest checkpoint run again on the new
node (at most the task's checkpoint interval: one invocation with ``checkpoint: every``).
When the old node comes back up, the controller tells it to forget the tasks that left it.

**Draining** (``POST /v1/nodes/{name}/drain``): no new work is placed on the node, and each of
its stateful tasks is migrated live, one after another, to a node the placer chooses;
``GET`` on the same path reports the progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from fades.controller.migrate import (
    MigrationReceipt,
    _task_row,
    ask,
    migrate,
    moving,
    stateful_on,
    wire_body,
)
from fades.errors import FadesError, MigrationFailed, NoPlacement, UnknownNode
from fades.task import parse_task

if TYPE_CHECKING:
    from fades.controller.service import Controller

log = logging.getLogger("fades.controller")

#: seconds between two looks at the registry for nodes that went down
FAILOVER_EVERY_S = 0.5
#: seconds before trying again to move the tasks of a down node that could not all move
RETRY_S = 5.0


class DrainTask(BaseModel):
    task_id: str
    tenant: str
    status: str = Field(default="waiting", description="waiting, moving, moved or failed")
    target: str | None = None
    error: str | None = None
    downtime_s: float | None = None


class DrainStatus(BaseModel):
    """Progress of draining one node."""

    node: str
    state: str = Field(description="running or finished")
    started_at: float
    finished_at: float | None = None
    total: int
    moved: int = 0
    failed: int = 0
    tasks: list[DrainTask] = Field(default_factory=list)


def targets(ctl: Controller, task: dict[str, Any], exclude: set[str]) -> list[str]:
    """Nodes that can take ``task``, the placer's choice first (excluding ``exclude``, nodes
    that are down and nodes being drained)."""
    skip = exclude | moving(ctl).draining
    up = [e.info for e in ctl.registry.up() if e.info.name not in skip]
    down = [e.info for e in ctl.registry.down()]
    t = parse_task(task)
    out: list[str] = []
    with contextlib.suppress(NoPlacement):
        out.append(ctl.placer.place(t, up, down).node)
    for info in sorted(up, key=lambda i: i.load.score):
        if info.name in out:
            continue
        with contextlib.suppress(NoPlacement):
            if ctl.placer.place(t, [info], down).node == info.name:
                out.append(info.name)
    return out


async def move_anywhere(
    ctl: Controller, tenant: str, task_id: str, source: str, *, force: bool, why: str
) -> MigrationReceipt:
    """Move one task off ``source`` to the first node that takes it."""
    row = await asyncio.to_thread(_task_row, ctl, tenant, task_id)
    if row is None:
        raise MigrationFailed(f"task {task_id!r} is not known")
    candidates = targets(ctl, row[1], {source})
    if not candidates:
        raise MigrationFailed(
            f"no node that is up can take task {task_id!r} (it needs a node holding its data)"
        )
    errors: list[str] = []
    for to in candidates:
        try:
            return await migrate(ctl, task_id, tenant=tenant, to=to, force=force, why=why)
        except (MigrationFailed, FadesError) as exc:
            if isinstance(exc, MigrationFailed) and "already being moved" in str(exc):
                raise
            errors.append(f"{to}: {exc}")
    raise MigrationFailed(f"task {task_id!r} could not move: " + "; ".join(errors))


# --- failover --------------------------------------------------------------------------------
class Failover:
    """Restarts the stateful tasks of nodes that went down elsewhere."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        #: node -> the ``started_at`` of the run whose tasks were handled
        self.handled: dict[str, float] = {}
        #: node -> (tenant, task id, wire id) moved off it while it was down
        self.left: dict[str, list[tuple[str, str, str]]] = {}
        self.receipts: list[MigrationReceipt] = []
        #: node -> when its tasks may be tried again (some could not move)
        self._retry_at: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FAILOVER_EVERY_S)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("failover pass failed; trying again")

    async def step(self) -> None:
        ctl = self.ctl
        for entry in ctl.registry.down():
            name, run = entry.info.name, entry.info.started_at
            if self.handled.get(name) == run or time.time() < self._retry_at.get(name, 0.0):
                continue
            tasks = await asyncio.to_thread(stateful_on, ctl, name)
            ok = True
            for tenant, task_id in tasks:
                ok = await self._fail_over(tenant, task_id, name) and ok
            if ok:
                self.handled[name] = run
                self._retry_at.pop(name, None)
            else:
                self._retry_at[name] = time.time() + RETRY_S
        for entry in ctl.registry.up():
            left = self.left.pop(entry.info.name, None)
            if left:
                await self._forget(entry.info.name, left)

    async def _fail_over(self, tenant: str, task_id: str, down: str) -> bool:
        why = f"failover: node {down} is down"
        try:
            receipt = await move_anywhere(self.ctl, tenant, task_id, down, force=True, why=why)
        except FadesError as exc:
            log.warning("failover of task %s off %s failed: %s", task_id, down, exc)
            return False
        row = await asyncio.to_thread(_task_row, self.ctl, tenant, task_id)
        if row is not None:
            self.left.setdefault(down, []).append((tenant, task_id, row[0]))
        self.receipts.append(receipt)
        log.warning("task %s failed over from %s to %s", task_id, down, receipt.target)
        return True

    async def _forget(self, node: str, left: list[tuple[str, str, str]]) -> None:
        for _, task_id, wire_id in left:
            req = {"op": "forget", "task_id": wire_id, "reason": "failed over while away"}
            try:
                await ask(self.ctl, node, req, 10.0)
            except FadesError as exc:
                log.warning("could not tell %s to forget task %s: %s", node, task_id, exc)


def failover(ctl: Controller) -> Failover:
    f: Failover | None = getattr(ctl, "_failover", None)
    if f is None:
        f = Failover(ctl)
        ctl._failover = f  # type: ignore[attr-defined]
    return f


async def run_failover(ctl: Controller) -> None:
    """The controller's failover watcher (runs until cancelled)."""
    await failover(ctl).run()


# --- draining --------------------------------------------------------------------------------
def _drains(ctl: Controller) -> dict[str, DrainStatus]:
    d: dict[str, DrainStatus] | None = getattr(ctl, "_drains", None)
    if d is None:
        d = {}
        ctl._drains = d  # type: ignore[attr-defined]
    return d


async def drain(ctl: Controller, node: str) -> DrainStatus:
    """Stop placing work on ``node`` and start moving its stateful tasks off it."""
    if ctl.registry.get(node) is None:
        known = ", ".join(sorted(ctl.registry.nodes)) or "none"
        raise UnknownNode(f"no node named {node!r} is registered (known: {known})", node=node)
    drains = _drains(ctl)
    current = drains.get(node)
    if current is not None and current.state == "running":
        return current
    moving(ctl).draining.add(node)
    tasks = await asyncio.to_thread(stateful_on, ctl, node)
    status = drains[node] = DrainStatus(
        node=node,
        state="running",
        started_at=time.time(),
        total=len(tasks),
        tasks=[DrainTask(task_id=t, tenant=tenant) for tenant, t in tasks],
    )
    ctl_tasks: set[asyncio.Task[None]] = getattr(ctl, "_drain_tasks", set())
    ctl._drain_tasks = ctl_tasks  # type: ignore[attr-defined]
    job = asyncio.create_task(_drain(ctl, status), name=f"fades-drain-{node}")
    ctl_tasks.add(job)
    job.add_done_callback(ctl_tasks.discard)
    return status


def drain_status(ctl: Controller, node: str) -> DrainStatus:
    status = _drains(ctl).get(node)
    if status is None:
        raise UnknownNode(f"node {node!r} is not being drained", node=node)
    return status


def undrain(ctl: Controller, node: str) -> None:
    """Place work on ``node`` again (UnknownNode: not registered and not being drained)."""
    draining = moving(ctl).draining
    if node not in draining and ctl.registry.get(node) is None:
        known = ", ".join(sorted(ctl.registry.nodes)) or "none"
        raise UnknownNode(f"no node named {node!r} is registered (known: {known})", node=node)
    draining.discard(node)


async def _drain(ctl: Controller, status: DrainStatus) -> None:
    for t in status.tasks:
        t.status = "moving"
        try:
            r = await move_anywhere(
                ctl, t.tenant, t.task_id, status.node, force=False, why=f"drained off {status.node}"
            )
        except FadesError as exc:
            t.status, t.error = "failed", str(exc)
            status.failed += 1
            continue
        t.status, t.target, t.downtime_s = "moved", r.target, r.downtime_s
        status.moved += 1
    status.state = "finished"
    status.finished_at = time.time()
    log.info("drained %s: %d moved, %d failed", status.node, status.moved, status.failed)


__all__ = [
    "DrainStatus",
    "Failover",
    "drain",
    "drain_status",
    "run_failover",
    "undrain",
    "wire_body",
]
