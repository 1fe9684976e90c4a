"""Moving a running stateful task to another node: the controller's side of a live migration.

The controller drives it over the nodes' control subjects (``fades.node.<node>.control``,
answered by :mod:`fades.node.agent.migrate`):

1. **prepare** the target: it fetches the function (and runtime) if it lacks them, checks it
   would accept the task and has a free worker slot, and opens a warm sandbox session;
2. **out** on the source: the task stops at its next invocation boundary, writes its final
   checkpoint (with its lease) and is left ``moved`` there, answering the sequence number it
   stopped at;
3. the task's record here names the target (before it starts there, so a failure after this
   point is retried against the record, never lost);
4. **in** on the target: it claims the task's lease (fencing any other instance), restores
   the checkpoint in the warm session and invokes it at once; it answers when that first
   invocation ended.

Nothing runs twice and nothing is skipped: the target continues at the sequence number the
source stopped at. **Downtime** is the end of the last invocation on the source to the end of
the first on the target; **total** is the request to that same point.

If the source does not answer (it died, or is cut off), the move is *forced*: the target
restarts the task from its newest checkpoint and its claim fences the source out, so a
source that comes back cannot write over the new state; the invocations since that
checkpoint run again (see :mod:`fades.controller.failover`, which uses the same path).
If the target fails after the source stopped, the task is started again on the source.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from fades.errors import (
    BadRequest,
    FadesError,
    MigrationFailed,
    NodeUnavailable,
    UnknownNode,
)
from fades.fabric.subjects import control_subject

if TYPE_CHECKING:
    from fades.controller.service import Controller

log = logging.getLogger("fades.controller")

#: seconds the target may take to fetch the function and open a warm session
PREPARE_TIMEOUT_S = 60.0
#: seconds the source may take to reach an invocation boundary and write its checkpoint
OUT_TIMEOUT_S = 30.0
#: seconds the target may take to restore and finish its first invocation
IN_TIMEOUT_S = 30.0


class MigrationReceipt(BaseModel):
    """What a migration did, with its times."""

    task_id: str
    source: str = Field(description="the node it ran on")
    target: str = Field(description="the node it runs on now")
    seq: int | None = Field(
        default=None, description="invocations completed before the move: the target continued here"
    )
    forced: bool = Field(
        default=False,
        description="the source did not answer: restarted from the last checkpoint (work "
        "since it may run again); the source is fenced out",
    )
    downtime_s: float | None = Field(
        default=None, description="last output on the source to first output on the target"
    )
    total_s: float = Field(description="request to first output on the target")
    prepare_s: float = Field(default=0.0, description="target: fetch the function, open a session")
    artifact_bytes: int = Field(default=0, description="bytes the target had to download")
    state_bytes: int = Field(default=0, description="size of the final checkpoint's state")
    phases: dict[str, float] = Field(
        default_factory=dict,
        description="where the downtime went (seconds): stop (last output on the source to "
        "its answer reaching the controller), relay (controller, to the target taking the "
        "task), start (taking it to its first output: claim, restore, invoke)",
    )
    detail: str = ""


class Moving:
    """Tasks on the move and the nodes being drained, for one controller."""

    def __init__(self) -> None:
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        #: nodes no new work is placed on
        self.draining: set[str] = set()

    def lock(self, tenant: str, task_id: str) -> asyncio.Lock:
        return self.locks.setdefault((tenant, task_id), asyncio.Lock())


def moving(ctl: Controller) -> Moving:
    m: Moving | None = getattr(ctl, "_moving", None)
    if m is None:
        m = Moving()
        ctl._moving = m  # type: ignore[attr-defined]
    return m


# --- the controller's records ----------------------------------------------------------------
def _task_row(ctl: Controller, tenant: str, task_id: str) -> tuple[str, dict[str, Any]] | None:
    """``(wire id, task JSON)`` of one task, from ``controller.db``."""
    store = ctl.store
    with store._lock:
        row = store._db.execute(
            "SELECT wire_id, task FROM tasks_v2 WHERE tenant = ? AND id = ?", (tenant, task_id)
        ).fetchone()
    return None if row is None else (str(row[0]), json.loads(row[1]))


async def _set_node(ctl: Controller, tenant: str, task_id: str, node: str, why: str) -> None:
    """Record that the task runs on ``node`` now (through the controller log)."""
    args = {"tenant": tenant, "task_id": task_id, "node": node, "why": why}
    await ctl.writes.write("set_node", args)


def stateful_on(ctl: Controller, node: str) -> list[tuple[str, str]]:
    """``(tenant, task id)`` of the unfinished stateful tasks placed on ``node``."""
    store = ctl.store
    with store._lock:
        rows = store._db.execute(
            "SELECT tenant, id, task FROM tasks_v2 WHERE node = ? AND location = 'edge' "
            "AND status IN ('accepted', 'dispatched') ORDER BY submitted_at",
            (node,),
        ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows if is_stateful(json.loads(r[2]))]


def is_stateful(task: dict[str, Any]) -> bool:
    fn = task.get("function")
    return isinstance(fn, dict) and fn.get("mode") == "persistent" and bool(fn.get("state"))


def wire_body(task: dict[str, Any], wire_id: str, digest: str | None) -> dict[str, Any]:
    """The task as its node holds it (the same form dispatch sends)."""
    body = dict(task)
    body["credentials"] = {**body.get("credentials", {}), "task_id": wire_id}
    if digest is not None:
        body["function"] = {**body.get("function", {}), "artifact": digest}
    return body


async def ask(ctl: Controller, node: str, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One control request to ``node``; NodeUnavailable if it does not answer."""
    try:
        raw = await ctl.bus.request(
            control_subject(node), json.dumps(req).encode(), timeout=timeout
        )
        reply = json.loads(raw)
    except (FadesError, TimeoutError, ValueError) as exc:
        raise NodeUnavailable(
            f"node {node!r} did not answer {req.get('op')} within {timeout:g} s: {exc}", node=node
        ) from exc
    if not isinstance(reply, dict):
        raise NodeUnavailable(f"node {node!r} answered {req.get('op')} with {reply!r}", node=node)
    return reply


def check_target(ctl: Controller, target: str) -> None:
    entry = ctl.registry.get(target)
    if entry is None:
        known = ", ".join(sorted(ctl.registry.nodes)) or "none"
        raise UnknownNode(f"no node named {target!r} is registered (known: {known})", node=target)
    reason = entry.down_reason(ctl.registry.down_after)
    if reason is not None:
        raise NodeUnavailable(f"node {target!r} is down: {reason}", node=target)
    if target in moving(ctl).draining:
        raise MigrationFailed(f"node {target!r} is being drained; choose another node")


def check_holds(ctl: Controller, target: str, task: dict[str, Any]) -> None:
    """The target must hold every data operation the task reads (else each invocation there
    would fail with NoData)."""
    from fades.placers.locality import covers, describe_op, lacking
    from fades.task import parse_task

    entry = ctl.registry.get(target)
    if entry is None:
        return
    missing = [op for op in parse_task(task).data if not covers(entry.info, op)]
    if missing:
        lack = lacking(entry.info, missing[0])
        why = f" (it lacks {', '.join(lack)})" if lack else ""
        raise MigrationFailed(
            f"node {target!r} does not hold {describe_op(missing[0])}{why}, which the task "
            "reads; move it to a node that holds its data"
        )


# --- one migration ---------------------------------------------------------------------------
async def migrate(
    ctl: Controller,
    task_id: str,
    *,
    tenant: str,
    to: str,
    force: bool = False,
    why: str = "migrated on request",
) -> MigrationReceipt:
    """Move one of ``tenant``'s running stateful tasks to node ``to``.

    ``force``: do not ask the source (it is down): restart from the last checkpoint.

    Raises:
        TaskNotFound (404), UnknownNode (404), BadRequest (400: same node), MigrationFailed
        (409: not a running stateful task, another move in progress, the target refused),
        NodeUnavailable (503: the target is down or did not answer).
    """
    rec = await ctl.get(task_id, tenant=tenant)
    if rec.done:
        raise MigrationFailed(f"task {task_id!r} already ended ({rec.status}); nothing to move")
    if rec.where != "edge":
        raise MigrationFailed(f"task {task_id!r} runs at the cloud; only edge tasks move")
    if rec.node == to:
        raise BadRequest(f"task {task_id!r} already runs on node {to!r}")
    row = await asyncio.to_thread(_task_row, ctl, tenant, task_id)
    assert row is not None
    wire_id, task = row
    if not is_stateful(task):
        raise MigrationFailed(
            f"task {task_id!r} is not a stateful persistent task (function.mode: persistent "
            "with function.state); only those can move"
        )
    check_target(ctl, to)
    check_holds(ctl, to, task)
    lock = moving(ctl).lock(tenant, task_id)
    if lock.locked():
        raise MigrationFailed(f"task {task_id!r} is already being moved")
    async with lock:
        return await _move(ctl, tenant, task_id, wire_id, task, rec, to, force, why)


async def _move(
    ctl: Controller,
    tenant: str,
    task_id: str,
    wire_id: str,
    task: dict[str, Any],
    rec: Any,
    to: str,
    force: bool,
    why: str,
) -> MigrationReceipt:
    t0 = time.time()
    source = rec.node
    body = wire_body(task, wire_id, rec.digest)
    if rec.status == "accepted":  # not handed to its node yet: dispatch it to the target
        await _set_node(ctl, tenant, task_id, to, f"{why} (from {source})")
        ctl.dispatcher.kick()
        return MigrationReceipt(
            task_id=task_id,
            source=source,
            target=to,
            total_s=time.time() - t0,
            detail="not yet dispatched: it goes to the target",
        )
    prep = await ask(
        ctl,
        to,
        {"op": "migrate_prepare", "task_id": wire_id, "task": body, "digest": rec.digest},
        PREPARE_TIMEOUT_S,
    )
    if prep.get("error"):
        raise MigrationFailed(f"node {to!r} cannot take task {task_id!r}: {prep['error']}")
    out: dict[str, Any] = {}
    forced = force
    if not force:
        try:
            out = await ask(
                ctl,
                source,
                {"op": "migrate_out", "task_id": wire_id, "to": to, "timeout": OUT_TIMEOUT_S},
                OUT_TIMEOUT_S + 5.0,
            )
        except NodeUnavailable as exc:
            log.warning(
                "migrating %s: source %s did not answer (%s); forcing", task_id, source, exc
            )
            forced = True
        else:
            if out.get("error"):
                await _abort(ctl, to, wire_id)
                raise MigrationFailed(
                    f"node {source!r} could not hand over task {task_id!r}: {out['error']}"
                )
    t_out = time.time()
    await _set_node(ctl, tenant, task_id, to, f"{why} (from {source})")
    try:
        arrived = await ask(
            ctl,
            to,
            {"op": "migrate_in", "task_id": wire_id, "task": body, "wait_s": IN_TIMEOUT_S},
            IN_TIMEOUT_S + 5.0,
        )
    except NodeUnavailable as exc:
        arrived = {"error": str(exc)}
    if arrived.get("error") and not arrived.get("started"):
        await _fall_back(ctl, tenant, task_id, wire_id, body, source, to, forced)
        raise MigrationFailed(
            f"node {to!r} did not start task {task_id!r}: {arrived['error']}; "
            + ("it stays recorded on the target" if forced else f"it runs on {source!r} again")
        )
    first_at = arrived.get("first_output_at")
    last_at = out.get("last_output_at")
    downtime = first_at - last_at if first_at is not None and last_at is not None else None
    detail = "moved at an invocation boundary; nothing ran twice"
    if forced:
        detail = (
            "the source did not answer: restarted from the last checkpoint; invocations "
            "since that checkpoint ran again; the source is fenced out"
        )
    if arrived.get("error"):
        detail += f"; but the target reported: {arrived['error']}"
    end = first_at if first_at is not None else time.time()
    took = arrived.get("accepted_at")
    phases: dict[str, float] = {}
    if last_at is not None and took is not None and first_at is not None:
        phases = {"stop": t_out - last_at, "relay": took - t_out, "start": first_at - took}
    receipt = MigrationReceipt(
        task_id=task_id,
        source=source,
        target=to,
        seq=out.get("seq") if not forced else arrived.get("first_seq"),
        forced=forced,
        downtime_s=downtime,
        total_s=max(0.0, end - t0),
        prepare_s=float(prep.get("prepare_s") or 0.0),
        artifact_bytes=int(prep.get("artifact_bytes") or 0),
        state_bytes=int(out.get("state_bytes") or 0),
        detail=detail,
        phases=phases,
    )
    log.info(
        "task %s moved %s -> %s (seq %s, downtime %s, forced %s)",
        task_id,
        source,
        to,
        receipt.seq,
        f"{downtime * 1000:.1f} ms" if downtime is not None else "-",
        forced,
    )
    return receipt


async def _abort(ctl: Controller, node: str, wire_id: str) -> None:
    try:
        await ask(ctl, node, {"op": "migrate_abort", "task_id": wire_id}, 5.0)
    except NodeUnavailable as exc:
        log.warning("could not abort the prepared move of %s on %s: %s", wire_id, node, exc)


async def _fall_back(
    ctl: Controller,
    tenant: str,
    task_id: str,
    wire_id: str,
    body: dict[str, Any],
    source: str,
    target: str,
    forced: bool,
) -> None:
    """The target did not start the task: start it on the source again (if it stopped)."""
    await _abort(ctl, target, wire_id)
    if forced:
        return
    try:
        back = await ask(
            ctl,
            source,
            {"op": "migrate_in", "task_id": wire_id, "task": body, "wait_s": IN_TIMEOUT_S},
            IN_TIMEOUT_S + 5.0,
        )
    except NodeUnavailable as exc:
        back = {"error": str(exc)}
    if back.get("error") and not back.get("started"):
        log.error("task %s: neither %s nor %s runs it: %s", task_id, target, source, back)
        return
    await _set_node(ctl, tenant, task_id, source, f"back on {source}: {target} did not start it")
