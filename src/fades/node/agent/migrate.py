"""The node's side of moving a stateful task: control operations the controller sends.

Each is a JSON request on ``fades.node.<name>.control`` (see :mod:`.control`), answered with
JSON (``{"error": ...}`` when it cannot be done, naming why):

* ``migrate_prepare`` (target) ``{"task": {...}, "digest": ..., "task_id": ...}``: fetch the
  function (and its runtime) if missing, check the task would be accepted here and that a
  worker slot is free, and open a warm sandbox session for it. Answers ``prepare_s`` and
  ``artifact_bytes`` (what had to be downloaded; 0 when held).
* ``migrate_out`` (source) ``{"task_id": ..., "to": node, "timeout": s}``: the running task
  stops at its next invocation boundary, writes a final checkpoint and is left ``moved``
  here. Answers ``seq`` (invocations completed: the target continues there),
  ``last_output_at`` and ``state_bytes``.
* ``migrate_in`` (target) ``{"task": {...}, "task_id": ..., "wait_s": s}``: take the task
  (claiming its lease fences any other instance), restore its newest checkpoint in the warm
  session and run it. Answers once its first invocation here ended: ``first_seq`` and
  ``first_output_at``.
* ``migrate_abort`` ``{"task_id": ...}``: forget a prepared session or a departure request.
* ``forget`` ``{"task_id": ..., "reason": ...}``: the task now lives elsewhere (failover
  while this node was away): leave it ``moved`` here if it has not started again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from fades.errors import CheckpointRejected, FadesError, TaskNotFound
from fades.functions.artifact import PYTHON_ABI
from fades.node.handoff import MOVED, handoffs, mark_moved, reactivate, summary
from fades.sandbox.base import Limits
from fades.task import Task, parse_task

if TYPE_CHECKING:
    from fades.node.agent import NodeAgent

log = logging.getLogger("fades.node.agent")

#: operations this module answers
OPS = frozenset({"migrate_prepare", "migrate_out", "migrate_in", "migrate_abort", "forget"})
#: longest a ``migrate_out`` or ``migrate_in`` request may ask to wait (seconds)
MAX_WAIT_S = 120.0


def _task_id(req: dict[str, Any]) -> str:
    task_id = req.get("task_id")
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("task_id must be a non-empty string")
    return task_id


def _wait(req: dict[str, Any], key: str, default: float) -> float:
    value = req.get(key, default)
    if not isinstance(value, (int, float)) or not 0 < value <= MAX_WAIT_S:
        raise ValueError(f"{key} must be a number of seconds in (0, {MAX_WAIT_S:g}]")
    return float(value)


def _task_body(req: dict[str, Any], task_id: str) -> dict[str, Any]:
    body = req.get("task")
    if not isinstance(body, dict):
        raise ValueError("task must be the task's JSON object")
    creds = body.get("credentials")
    if not isinstance(creds, dict) or creds.get("task_id") != task_id:
        raise ValueError("task.credentials.task_id must equal task_id")
    return body


async def handle(agent: NodeAgent, op: str, req: dict[str, Any]) -> dict[str, Any]:
    """Answer one migration operation (ValueError: a malformed request)."""
    task_id = _task_id(req)
    orc = agent.require_node().orchestrator
    hand = handoffs(orc)
    if op == "migrate_prepare":
        return await _prepare(agent, task_id, req)
    if op == "migrate_out":
        wait = _wait(req, "timeout", 30.0)
        to = str(req.get("to") or "")[:64]
        return await _depart(agent, task_id, to, wait)
    if op == "migrate_in":
        body = _task_body(req, task_id)
        wait = _wait(req, "wait_s", 30.0)
        return await _arrive(agent, task_id, body, wait)
    if op == "migrate_abort":
        hand.cancel_arrival(task_id)
        hand.forget_departure(task_id)
        return {"ok": True}
    if op == "forget":
        reason = str(req.get("reason") or "the task moved to another node")[:200]
        return await asyncio.to_thread(_forget, agent, task_id, reason)
    raise ValueError(f"unknown migration operation {op!r}")


async def _prepare(agent: NodeAgent, task_id: str, req: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    body = _task_body(req, task_id)
    digest = req.get("digest")
    if not isinstance(digest, str):
        raise ValueError("digest must be the function's sha256: digest")
    if agent.stopping:
        return {"error": f"node {agent.name} is stopping"}
    orc = agent.require_node().orchestrator
    load = orc.load
    if load["running"] + load["queued"] >= orc.capacity:
        return {
            "error": f"node {agent.name} has no free worker slot "
            f"({load['running']} running, {load['queued']} queued, capacity {orc.capacity})"
        }
    sync = agent.require_sync()
    held = await asyncio.to_thread(sync.held, digest)
    runtime_held = await asyncio.to_thread(_has_runtime, agent)
    try:
        artifact = await sync.artifact(digest)
        fetched = 0 if held is not None else len(artifact.to_bytes())
        if artifact.kind == "python" and not runtime_held:
            fetched += len((await sync.runtime()).to_bytes())
    except FadesError as exc:
        return {"error": f"cannot fetch {digest}: {exc.kind}: {exc}"}
    try:
        task = await asyncio.to_thread(orc.validate, {**body, "function": body["function"]})
    except FadesError as exc:
        return {"error": f"the task would be refused here: {exc.kind}: {exc}"}
    try:  # its checkpoint must verify here (the nodes must share a state key)
        await asyncio.to_thread(orc.checkpoints.load, task_id, digest=digest)
    except CheckpointRejected as exc:
        return {
            "error": f"node {agent.name} cannot use this task's checkpoint ({exc}); every "
            "node must share one state key: set the same FADES_STATE_KEY on all of them, or "
            "use a fabric token"
        }
    except FadesError as exc:
        return {"error": f"cannot read the task's checkpoint: {exc.kind}: {exc}"}
    limits = Limits(task.function.memory_mib, task.function.time_budget_ms)
    try:
        session = await asyncio.to_thread(orc.sandboxes.open, artifact, limits)
    except FadesError as exc:
        return {"error": f"cannot open a sandbox for it: {exc.kind}: {exc}"}
    try:  # load the function now (a snapshot runs no code of it but its module's top level)
        await asyncio.to_thread(session.snapshot)
    except FadesError as exc:
        log.info("node %s: warming task %s's session: %s", agent.name, task_id, exc)
    handoffs(orc).prepare(task_id, session, task)
    log.info("node %s: prepared a warm session for arriving task %s", agent.name, task_id)
    return {
        "ready": True,
        "prepare_s": time.perf_counter() - t0,
        "artifact_bytes": fetched,
        "artifact_size": len(artifact.to_bytes()),
    }


def _has_runtime(agent: NodeAgent) -> bool:
    try:
        agent.require_node().functions.runtime(PYTHON_ABI)
    except FadesError:
        return False
    return True


async def _depart(agent: NodeAgent, task_id: str, to: str, wait: float) -> dict[str, Any]:
    orc = agent.require_node().orchestrator
    hand = handoffs(orc)
    first = await asyncio.to_thread(_start_departure, agent, task_id, to)
    if first is not None:
        return first
    dep = hand.departures[task_id]
    got = await wait_event(dep.done, wait)
    hand.forget_departure(task_id)
    if not got:
        return {"error": f"task {task_id!r} did not reach an invocation boundary in {wait:g} s"}
    out = summary(dep)
    if dep.error:
        return {"error": dep.error, **out}
    return {"moved": True, **out}


def _start_departure(agent: NodeAgent, task_id: str, to: str) -> dict[str, Any] | None:
    """Ask the loop to stop (None), or the answer at once."""
    orc = agent.require_node().orchestrator
    try:
        rec = orc.store.get(task_id)
    except TaskNotFound:
        return {"error": f"node {agent.name} does not hold task {task_id!r}"}
    if rec.status == MOVED:
        return {"error": f"task {task_id!r} already left node {agent.name}"}
    if rec.done:
        return {"error": f"task {task_id!r} already ended here ({rec.status})"}
    hand = handoffs(orc)
    hand.depart(task_id, to)
    if rec.status == "accepted":
        # queued, not running: nothing to checkpoint here; the loop will see it moved
        mark_moved(orc.store, task_id, f"moved to node {to} before it started here")
        hand.forget_departure(task_id)
        return {"moved": True, "seq": None, "last_output_at": None, "state_bytes": 0}
    with orc._wake:
        orc._wake.notify_all()
    log.info(
        "node %s: task %s leaves for %s at its next invocation boundary", agent.name, task_id, to
    )
    return None


async def _arrive(
    agent: NodeAgent, task_id: str, body: dict[str, Any], wait: float
) -> dict[str, Any]:
    orc = agent.require_node().orchestrator
    hand = handoffs(orc)
    arr = hand.arrival(task_id)
    if arr is None:
        arr = hand.prepare(task_id, None)  # not prepared: the loop opens its own session
    t0 = time.time()
    refused = await asyncio.to_thread(_take, agent, task_id, body, arr.task)
    if refused is not None:
        hand.cancel_arrival(task_id)
        return {"error": refused}
    got = await wait_event(arr.first, wait)
    with hand._lock:
        if hand.arrivals.get(task_id) is arr:
            del hand.arrivals[task_id]
    if arr.session is not None:  # never taken (the loop failed before opening it)
        arr.session.close()
    if not got:
        return {"started": True, "error": f"no output from the task within {wait:g} s"}
    if arr.error:
        return {"started": True, "error": arr.error}
    return {
        "started": True,
        "first_seq": arr.first_seq,
        "first_output_at": arr.first_output_at,
        "accepted_at": t0,
    }


def _take(agent: NodeAgent, task_id: str, body: dict[str, Any], task: Task | None) -> str | None:
    """Accept the arriving task here (or re-activate it); why not, or None. A task validated
    when its session was prepared is accepted without validating it again."""
    orc = agent.require_node().orchestrator
    try:
        if orc.exists(task_id):
            if reactivate(orc.store, task_id):
                orc.queue.put(task or parse_task(body))
                return None
            status = orc.store.get(task_id).status
            if status in ("accepted", "running"):
                return f"task {task_id!r} is already {status} on {agent.name}"
            return f"task {task_id!r} already ended on {agent.name} ({status})"
        if task is not None and not orc._stop.is_set():
            orc.store.accept(task.id, task.tenant, task.to_json())
            orc.queue.put(task)
        else:
            orc.submit(body)
    except FadesError as exc:
        return f"refused: {exc.kind}: {exc}"
    return None


async def wait_event(event: threading.Event, timeout: float) -> bool:
    """Wait for a thread's event without holding one of the loop's executor threads."""
    if event.is_set():
        return True
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bool] = loop.create_future()

    def settle(ok: bool) -> None:
        if not fut.done():
            fut.set_result(ok)

    def waiter() -> None:
        ok = event.wait(timeout)
        loop.call_soon_threadsafe(settle, ok)

    threading.Thread(target=waiter, name="fades-handoff-wait", daemon=True).start()
    return await fut


def _forget(agent: NodeAgent, task_id: str, reason: str) -> dict[str, Any]:
    orc = agent.require_node().orchestrator
    try:
        rec = orc.store.get(task_id)
    except TaskNotFound:
        return {"found": False}
    if rec.done or rec.status == MOVED:
        return {"found": True, "status": rec.status}
    handoffs(orc).depart(task_id, "")
    mark_moved(orc.store, task_id, reason)
    with orc._wake:
        orc._wake.notify_all()
    return {"found": True, "status": MOVED}
