"""The node's control service (``fades.node.<name>.control``): operations on its tasks that
the controller relays: ``cancel``, and moving a stateful task (``migrate_*``, ``forget``;
see :mod:`.migrate`).

A request is JSON ``{"op": "cancel", "task_id": ..., "reason": ...}`` with the task's id on
the fabric; the reply is JSON ``{"found": bool, "status": str}`` (the task's status after the
request: a task not yet started is ``failed`` with kind ``TaskCancelled`` at once, a running
persistent task stops after its current invocation), or ``{"error": ...}`` for a request it
cannot read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from fades.errors import TaskNotFound
from fades.fabric.subjects import control_subject
from fades.node.agent import migrate

if TYPE_CHECKING:
    from fades.node.agent import NodeAgent

log = logging.getLogger("fades.node.agent")


async def serve_control(agent: NodeAgent) -> None:
    """Answer control requests for ``agent`` on its control subject."""

    async def handle(data: bytes) -> bytes:
        try:
            req = json.loads(data)
            if isinstance(req, dict) and req.get("op") in migrate.OPS:
                return await _migration(agent, req)
            if not isinstance(req, dict) or req.get("op") != "cancel":
                ops = ", ".join(["cancel", *sorted(migrate.OPS)])
                raise ValueError(f"the operations are {ops}")
            task_id = req.get("task_id")
            if not isinstance(task_id, str) or not task_id:
                raise ValueError("task_id must be a non-empty string")
            reason = str(req.get("reason") or "cancelled on request")[:200]
        except ValueError as exc:
            return json.dumps({"error": f"bad control request: {exc}"}).encode()
        reply = await asyncio.to_thread(_cancel, agent, task_id, reason)
        return json.dumps(reply).encode()

    await agent.require_bus().serve(control_subject(agent.name), handle)


async def _migration(agent: NodeAgent, req: dict[str, Any]) -> bytes:
    try:
        reply = await migrate.handle(agent, str(req["op"]), req)
    except ValueError as exc:
        reply = {"error": f"bad control request: {exc}"}
    except Exception as exc:  # answer, never leave the controller waiting for a timeout
        log.exception("node %s: %s failed", agent.name, req.get("op"))
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    return json.dumps(reply).encode()


def _cancel(agent: NodeAgent, task_id: str, reason: str) -> dict[str, Any]:
    orc = agent.require_node().orchestrator
    try:
        orc.cancel(task_id, reason)
        status = orc.store.get(task_id).status
    except TaskNotFound:
        return {"found": False, "status": "unknown"}
    return {"found": True, "status": str(status)}
