"""The pipelines part of the HTTP API (included by :func:`fades.controller.api.create_app`).

Same bearer tokens and tenant scoping as tasks: a tenant sees only its own pipelines (any
other name is 404), and errors go through the API's one status table (a malformed spec or an
unknown function 422 with ``problems`` naming ``stages.<stage>.<field>``, a stage no node can
serve 422, an unknown pipeline 404, an active one submitted again 409).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request

from fades.controller import bodies
from fades.controller.auth import Tenant
from fades.pipelines.service import PipelineService

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])

#: a pipeline name or run id in a path (longer ones are refused before any lookup)
MAX_NAME = 64
_SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
Name = Annotated[str, Path(max_length=MAX_NAME, description="the pipeline's name")]


def _service(request: Request) -> PipelineService:
    service: PipelineService = request.app.state.controller.pipelines
    return service


async def _spec(request: Request) -> dict[str, Any]:
    bodies.require_type(request, ("application/json",), "a pipeline spec")
    raw = await bodies.read_body(request, bodies.MAX_TASK_BYTES, "a pipeline spec")
    return bodies.parse_json_object(raw, "the pipeline spec")


@router.post("/plan", openapi_extra=_SPEC_BODY)
async def plan_pipeline(tenant: Tenant, request: Request) -> dict[str, Any]:
    """Where each stage would run now and why; nothing is deployed."""
    return await _service(request).dry_run(await _spec(request), tenant)


@router.post("", status_code=201, openapi_extra=_SPEC_BODY)
async def submit_pipeline(
    tenant: Tenant,
    request: Request,
    replace: Annotated[bool, Query(description="replace an active pipeline of that name")] = False,
) -> dict[str, Any]:
    """Deploy a pipeline (an on-demand one starts its ``run.runs`` runs)."""
    return await _service(request).submit(await _spec(request), tenant, replace=replace)


@router.get("")
async def list_pipelines(tenant: Tenant, request: Request) -> list[dict[str, Any]]:
    """Your pipelines, newest first, with run counts."""
    return await _service(request).list_pipelines(tenant)


@router.get("/{name}")
async def pipeline_status(tenant: Tenant, request: Request, name: Name) -> dict[str, Any]:
    """A pipeline: state, plan (each stage's node and mode), runs by status, queue depths."""
    return await _service(request).status(name, tenant)


@router.get("/{name}/runs")
async def list_runs(
    tenant: Tenant,
    request: Request,
    name: Name,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    """A pipeline's runs, newest first, with status, reason and finale results."""
    return await _service(request).runs(name, tenant, limit)


@router.get("/{name}/runs/{run}")
async def run_timeline(
    tenant: Tenant,
    request: Request,
    name: Name,
    run: Annotated[str, Path(max_length=MAX_NAME)],
    wait: Annotated[
        float, Query(description="block up to this many seconds for the run to end (max 60)")
    ] = 0.0,
) -> dict[str, Any]:
    """One run's timeline: each stage instance's node, queue, start, compute, hop, bytes,
    status and error."""
    service = _service(request)
    wait = bodies.finite(wait, "wait", 0.0, 1e9)
    if wait > 0:
        await service.row(name, tenant)
        await service.wait_run(name, run, min(wait, 60.0))
    return await service.timeline(name, run, tenant)


@router.post("/{name}/runs", status_code=202)
async def start_runs(
    tenant: Tenant,
    request: Request,
    name: Name,
    body: Annotated[dict[str, Any] | None, Body()] = None,
) -> dict[str, Any]:
    """Start more runs of an active pipeline (body ``{"count": N}``, default 1)."""
    count = (body or {}).get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool):
        from fades.errors import BadRequest

        raise BadRequest("count must be a whole number of runs")
    return await _service(request).start_runs(name, tenant, count)


@router.post("/{name}/cancel")
async def cancel_pipeline(tenant: Tenant, request: Request, name: Name) -> dict[str, Any]:
    """Stop a pipeline: nodes stop its stages and triggers; running runs end cancelled."""
    return await _service(request).cancel(name, tenant)
