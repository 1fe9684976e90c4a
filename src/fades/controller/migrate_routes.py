"""HTTP routes for moving stateful tasks (included by :mod:`fades.controller.api`).

* ``POST /v1/tasks/{id}/migrate`` ``{"to": node}``: a live migration (a tenant moves only its
  own tasks; 404 for another's), answered when the task runs on the target;
* ``POST /v1/nodes/{name}/drain``: stop placing work on the node and move its stateful tasks
  off it (answers at once with the progress; ``GET`` the same path to follow it);
* ``DELETE /v1/nodes/{name}/drain``: place work on it again.

A move that cannot be done answers 409 with ``error_kind`` ``MigrationFailed`` and the reason.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fades.controller.auth import Tenant
from fades.controller.failover import DrainStatus, drain, drain_status, undrain
from fades.controller.migrate import MigrationReceipt, migrate
from fades.errors import StateError

router = APIRouter()

_NAME = 256


class MigrateRequest(BaseModel):
    to: str = Field(min_length=1, max_length=64, description="the node to move the task to")


def _conflict(exc: StateError) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "error_kind": exc.kind}, status_code=409)


@router.post(
    "/v1/tasks/{task_id}/migrate",
    response_model=MigrationReceipt,
    tags=["tasks"],
    responses={409: {"description": "the task cannot move (not running, not stateful, busy)"}},
)
async def migrate_task(
    tenant: Tenant,
    request: Request,
    body: MigrateRequest,
    task_id: Annotated[str, Path(max_length=_NAME)],
) -> Any:
    """Move a running stateful task to another node, live: it continues there at the next
    invocation, with its state, nothing run twice."""
    try:
        return await migrate(request.app.state.controller, task_id, tenant=tenant, to=body.to)
    except StateError as exc:
        return _conflict(exc)


@router.post("/v1/nodes/{name}/drain", response_model=DrainStatus, tags=["nodes"])
async def drain_node(
    tenant: Tenant, request: Request, name: Annotated[str, Path(max_length=_NAME)]
) -> DrainStatus:
    """Place no new work on the node and move every stateful task off it (see ``GET``)."""
    return await drain(request.app.state.controller, name)


@router.get("/v1/nodes/{name}/drain", response_model=DrainStatus, tags=["nodes"])
async def drain_progress(
    tenant: Tenant, request: Request, name: Annotated[str, Path(max_length=_NAME)]
) -> DrainStatus:
    """How far draining the node has come."""
    return drain_status(request.app.state.controller, name)


@router.delete("/v1/nodes/{name}/drain", tags=["nodes"])
async def undrain_node(
    tenant: Tenant, request: Request, name: Annotated[str, Path(max_length=_NAME)]
) -> dict[str, str]:
    """Place work on the node again."""
    undrain(request.app.state.controller, name)
    return {"node": name, "state": "accepting work"}
