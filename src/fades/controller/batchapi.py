"""HTTP routes for clients with many tasks: a batch submit and the result stream.

* ``POST /v1/tasks/batch``: ``{"tasks": [task, ...]}`` (at most :data:`MAX_BATCH_TASKS`,
  :data:`MAX_BATCH_BYTES` in all). Each task is validated, placed, recorded and dispatched
  on its own: the answer (200) lists, in order, ``accepted: true`` with the receipt, or
  ``accepted: false`` with the ``status`` a single submit would have had, ``error_kind``,
  ``detail`` (and ``problems``). A bad task refuses only itself. ``?node=`` and ``?where=``
  apply to every task of the batch.
* ``GET /v1/results/stream``: server-sent events of the tenant's outcomes (see
  :mod:`fades.controller.stream`); ``?task_id=`` (repeatable) filters, ``Last-Event-ID`` or
  ``?since=`` resumes.

Both sit behind the same bearer token and tenant scoping as every ``/v1`` route.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from fades.controller import bodies
from fades.controller.auth import Tenant
from fades.controller.statuses import error_body, status_of
from fades.controller.stream import MAX_STREAM_IDS, StreamHub
from fades.errors import BadRequest, FadesError, TaskValidationError

if TYPE_CHECKING:
    from fades.controller.service import Controller

#: most tasks in one batch request
MAX_BATCH_TASKS = 1000
#: largest batch request body (bytes)
MAX_BATCH_BYTES = 16 * 1024 * 1024
#: the largest event id a stream resumes after (SQLite's largest row id)
MAX_EVENT_ID = 2**63 - 1
#: longest node name or task id taken in a query
MAX_NAME = 256


async def submit_batch(
    controller: Controller,
    tasks: list[Any],
    *,
    tenant: str | None,
    node: str | None = None,
    where: str = "edge",
) -> list[dict[str, Any]]:
    """Submit every task concurrently (so their writes share commits); one result per task,
    in order: the receipt with ``accepted: true``, or the refusal with ``accepted: false``."""

    async def one(i: int, raw: Any) -> dict[str, Any]:
        tid = _task_id(raw)
        try:
            if not isinstance(raw, dict):
                raise TaskValidationError(
                    f"task {i} of the batch must be a JSON object, not {type(raw).__name__}",
                    problems=[(f"tasks.{i}", "not a JSON object")],
                )
            receipt = await controller.submit(raw, tenant=tenant, node=node, where=where)  # type: ignore[arg-type]
        except FadesError as exc:
            body = error_body(exc)
            return {"index": i, "accepted": False, "task_id": tid, "status": status_of(exc)} | body
        return {"index": i, "accepted": True} | receipt.model_dump()

    return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks))))


def _task_id(raw: Any) -> str | None:
    if isinstance(raw, dict) and isinstance(raw.get("credentials"), dict):
        tid = raw["credentials"].get("task_id")
        return tid if isinstance(tid, str) else None
    return None


def router(controller: Controller) -> APIRouter:
    """The batch and stream routes over ``controller``."""
    hub = StreamHub(controller)
    r = APIRouter(tags=["tasks"])

    @r.post(
        "/v1/tasks/batch",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"tasks": {"type": "array", "items": {"type": "object"}}},
                        }
                    }
                },
            }
        },
    )
    async def submit_tasks(
        tenant: Tenant,
        request: Request,
        node: Annotated[
            str | None, Query(max_length=MAX_NAME, description="run every task on this node")
        ] = None,
        where: Annotated[Literal["edge", "cloud"], Query()] = "edge",
    ) -> JSONResponse:
        """Submit up to 1000 tasks in one request; each is accepted or refused on its own."""
        bodies.require_type(request, ("application/json",), "a batch of tasks")
        raw = await bodies.read_body(request, MAX_BATCH_BYTES, "a batch of tasks")
        body = bodies.parse_json_object(raw, "the batch")
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise TaskValidationError(
                'a batch is {"tasks": [task, ...]} with at least one task',
                problems=[("tasks", "missing, empty or not a list")],
            )
        if len(tasks) > MAX_BATCH_TASKS:
            raise TaskValidationError(
                f"a batch holds at most {MAX_BATCH_TASKS} tasks, not {len(tasks)}",
                problems=[("tasks", f"more than {MAX_BATCH_TASKS}")],
            )
        results = await submit_batch(controller, tasks, tenant=tenant, node=node, where=where)
        accepted = sum(1 for x in results if x["accepted"])
        return JSONResponse(
            {"accepted": accepted, "refused": len(results) - accepted, "results": results}
        )

    @r.get("/v1/results/stream", response_class=StreamingResponse)
    async def result_stream(
        tenant: Tenant,
        request: Request,
        task_id: Annotated[
            list[str] | None,
            Query(description=f"only these tasks (at most {MAX_STREAM_IDS}); ends when all sent"),
        ] = None,
        since: Annotated[
            int | None,
            Query(ge=0, le=MAX_EVENT_ID, description="resume after this event id (Last-Event-ID)"),
        ] = None,
    ) -> StreamingResponse:
        """Server-sent events: each of your outcomes once, as it is stored (resumable)."""
        if task_id is not None and len(task_id) > MAX_STREAM_IDS:
            raise BadRequest(f"a stream filters on at most {MAX_STREAM_IDS} task ids")
        if task_id is not None and any(len(t) > MAX_NAME for t in task_id):
            raise BadRequest(f"a task id is at most {MAX_NAME} characters")
        last = request.headers.get("last-event-id")
        if last is not None:
            if not last.strip().isdigit():
                raise BadRequest(f"Last-Event-ID must be an event id (a number), not {last!r}")
            since = int(last)
            if since > MAX_EVENT_ID:
                raise BadRequest(f"Last-Event-ID is at most {MAX_EVENT_ID}, not {since}")
        return StreamingResponse(
            hub.events(
                tenant,
                task_ids=task_id,
                since=since,
                closing=lambda: bool(getattr(request.app.state, "closing", False)),
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    r.hub = hub  # type: ignore[attr-defined]  # for tests
    return r
