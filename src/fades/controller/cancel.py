"""Cancelling a task: the controller relays the request to the task's node over the Bus
(``fades.node.<node>.control``, see :mod:`fades.node.agent.control`).

- A task that already ended is refused (``TaskNotCancellable``, HTTP 409).
- An edge task the node holds: the node cancels it (not started: it fails at once; a running
  persistent task stops after its current invocation; a running ephemeral one is bounded by
  its time budget) and its outcome, ``failed`` with kind ``TaskCancelled``, comes back on the
  results stream as any outcome does.
- An edge task the node does not hold yet (still in its stream, or not yet dispatched) and a
  cloud task: the controller records the ``TaskCancelled`` outcome itself; the first outcome
  of a task is final, so a later one from the node is ignored.
- The node does not answer in ``timeout`` seconds: ``NodeUnavailable`` (HTTP 503).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from fades.controller.models import CancelReceipt
from fades.errors import FadesError, NodeUnavailable, TaskCancelled, TaskNotCancellable
from fades.fabric.subjects import control_subject
from fades.outcome import Outcome

if TYPE_CHECKING:
    from fades.controller.service import Controller

#: seconds the controller waits for the node's answer to a cancel request
CANCEL_TIMEOUT_S = 10.0


async def cancel(
    ctl: Controller, task_id: str, *, tenant: str, timeout: float = CANCEL_TIMEOUT_S
) -> CancelReceipt:
    """Cancel one of ``tenant``'s tasks (TaskNotFound for any other)."""
    rec = await ctl.get(task_id, tenant=tenant)
    if rec.done:
        raise TaskNotCancellable(
            f"task {task_id!r} already ended ({rec.status}); only a running or waiting task "
            "can be cancelled",
            task_id=task_id,
        )
    reason = f"cancelled by tenant {tenant!r}"
    if rec.where == "cloud":
        ctl.cancel_cloud(tenant, task_id)
        return await _record(ctl, rec.node, tenant, task_id, reason, "cancelled at the cloud")
    wire_id = await asyncio.to_thread(ctl.store.wire_id, tenant, task_id) or task_id
    request = json.dumps({"op": "cancel", "task_id": wire_id, "reason": reason}).encode()
    try:
        raw = await ctl.bus.request(control_subject(rec.node), request, timeout=timeout)
        reply = json.loads(raw)
    except (FadesError, TimeoutError, ValueError) as exc:
        raise NodeUnavailable(
            f"node {rec.node!r} did not answer the cancel request for task {task_id!r} "
            f"within {timeout:g} s: {exc}",
            node=rec.node,
        ) from exc
    if not isinstance(reply, dict) or "error" in reply:
        raise NodeUnavailable(f"node {rec.node!r} refused the cancel request: {reply!r}")
    if not reply.get("found"):
        return await _record(
            ctl, rec.node, tenant, task_id, reason, "the node had not taken the task yet"
        )
    after = await ctl.get(task_id, tenant=tenant)
    return CancelReceipt(
        task_id=task_id,
        node=rec.node,
        status=after.status,
        detail=f"the node cancelled it (status there: {reply.get('status')}); a running "
        "persistent task stops after its current invocation",
    )


async def _record(
    ctl: Controller, node: str, tenant: str, task_id: str, reason: str, detail: str
) -> CancelReceipt:
    now = time.time()
    out = Outcome(
        task_id=task_id,
        tenant=tenant,
        node=node,
        status="failed",
        error_kind=TaskCancelled.__name__,
        error=f"{reason}: {detail}",
        finished_at=now,
    )
    await ctl.recorder.record(out, "edge")
    after = await ctl.get(task_id, tenant=tenant)
    return CancelReceipt(task_id=task_id, node=node, status=after.status, detail=detail)
