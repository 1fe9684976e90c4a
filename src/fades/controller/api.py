"""The controller's HTTP API (FastAPI; OpenAPI docs at ``/docs``).

Every ``/v1`` route needs ``Authorization: Bearer <token>``; the token names the tenant, and a
tenant sees only its own tasks. Errors answer ``{"detail": <message>, "error_kind": <class>}``
(plus ``problems`` for a malformed task) with the status of :data:`STATUS`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fades import __version__
from fades.console import mount as mount_console
from fades.controller import batchapi, bodies, pipeapi
from fades.controller.apidocs import mount_docs
from fades.controller.auth import Tenant
from fades.controller.bodycap import BodyCap
from fades.controller.devices import router as devices_router
from fades.controller.metrics import CONTENT_TYPE_LATEST
from fades.controller.migrate_routes import router as migrate_router
from fades.controller.models import CancelReceipt, FunctionInfo, NodeView, SubmitReceipt, TaskInfo
from fades.controller.service import Controller
from fades.controller.statuses import error_body, status_of
from fades.controller.store import TaskRecord
from fades.errors import FadesError

log = logging.getLogger("fades.controller")


#: longest ``?wait=`` a GET may block (seconds)
MAX_WAIT_S = 60.0
#: longest node name or task id taken in a path or query
MAX_NAME = 256


def task_json(rec: TaskRecord) -> Response:
    """A task's :class:`TaskInfo` as the JSON answer, serialized once (a route that returns
    the model has FastAPI validate it against its response model again first)."""
    return Response(task_info(rec).model_dump_json(), media_type="application/json")


def task_info(rec: TaskRecord) -> TaskInfo:
    """The HTTP view of a stored task: its outcome (if any) and the controller's fields."""
    ended = rec.outcome.model_dump() if rec.outcome is not None else {}
    return TaskInfo(
        **ended
        | {
            "task_id": rec.task_id,
            "tenant": rec.tenant,
            "node": rec.node,
            "where": rec.where,
            "status": rec.status,
            "placement": rec.placement,
            "decision": rec.decision,
            "submitted_at": rec.submitted_at,
            "latency_s": rec.latency_s,
            "bytes_uplink": rec.bytes_uplink,
            "digest": ended.get("digest") or rec.digest,
        }
    )


class ContainErrors:
    """ASGI middleware: an unexpected exception becomes a 500 reply and goes no further, so
    the server keeps the keep-alive connection (it drops it when an exception escapes)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            body = {"detail": f"internal error: {type(exc).__name__}", "error_kind": "internal"}
            await JSONResponse(body, status_code=500)(scope, receive, send)


#: ``?node=``: the node a task runs on (default: placed)
NodeQuery = Annotated[
    str | None, Query(max_length=MAX_NAME, description="run on this node (default: placed)")
]
#: ``?where=``: at the node, or at the controller on the node's data
WhereQuery = Annotated[
    Literal["edge", "cloud"], Query(description="at the node, or here on its data")
]

#: the OpenAPI description of a task body (the routes read it themselves, in chunks)
TASK_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def create_app(controller: Controller) -> FastAPI:
    """The HTTP API over ``controller`` (which must be started in the serving loop)."""
    app = FastAPI(
        title="fades controller",
        version=__version__,
        description="Offload tasks to edge nodes next to their data, or run them in the cloud.",
        docs_url=None,  # served from local files below, not from a CDN
        redoc_url=None,
    )
    mount_docs(app)
    app.state.controller = controller
    app.add_middleware(ContainErrors)
    app.add_middleware(BodyCap)  # outermost: no route reads a body past its cap

    # --- the one place errors become HTTP answers ----------------------------------------------
    @app.exception_handler(FadesError)
    async def _fades_error(_: Request, exc: FadesError) -> JSONResponse:
        code = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return JSONResponse(error_body(exc), status_code=code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "reason": str(e["msg"])[:200]}
            for e in exc.errors()[:20]
        ]
        detail = "; ".join(f"{p['field']}: {p['reason']}" for p in problems)
        return JSONResponse(
            {
                "detail": f"malformed request: {detail}",
                "error_kind": "BadRequest",
                "problems": problems,
            },
            status_code=400,
        )

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {
                "detail": str(exc.detail),
                "error_kind": "PayloadTooLarge" if exc.status_code == 413 else "BadRequest",
            },
            status_code=exc.status_code,
            headers=exc.headers,
        )

    app.include_router(batchapi.router(controller))  # batch submit + result stream

    # --- tasks -----------------------------------------------------------------------------------
    async def read_task(request: Request) -> dict[str, Any]:
        """The request's task: JSON, an object, within the task body limit."""
        bodies.require_type(request, ("application/json",), "a task")
        raw = await bodies.read_body(request, bodies.MAX_TASK_BYTES, "a task")
        return bodies.parse_json_object(raw, "the task")

    @app.post(
        "/v1/tasks",
        status_code=202,
        response_model=SubmitReceipt,
        tags=["tasks"],
        openapi_extra=TASK_BODY_DOC,
    )
    async def submit_task(
        tenant: Tenant,
        request: Request,
        node: NodeQuery = None,
        where: WhereQuery = "edge",
    ) -> Response:
        """Submit a task (JSON: credentials, data, function), to a named node or placed."""
        task = await read_task(request)
        receipt = await controller.submit(task, tenant=tenant, node=node, where=where)
        return Response(receipt.model_dump_json(), 202, media_type="application/json")

    @app.post(
        "/v1/tasks/run",
        response_model=TaskInfo,
        tags=["tasks"],
        openapi_extra=TASK_BODY_DOC,
    )
    async def run_task(
        tenant: Tenant,
        request: Request,
        node: NodeQuery = None,
        where: WhereQuery = "edge",
        wait: Annotated[
            float, Query(description=f"block up to this many seconds (max {MAX_WAIT_S:g})")
        ] = MAX_WAIT_S,
    ) -> Response:
        """Submit a task and answer once it ended (or as it stands after ``wait`` seconds):
        one request instead of a submit and a long-poll."""
        wait = bodies.finite(wait, "wait", 0.0, 1e9)
        task = await read_task(request)
        receipt = await controller.submit(task, tenant=tenant, node=node, where=where)
        rec = await controller.wait(receipt.task_id, min(wait, MAX_WAIT_S), tenant=tenant)
        return task_json(rec)

    @app.get("/v1/tasks/{task_id}", response_model=TaskInfo, tags=["tasks"])
    async def get_task(
        tenant: Tenant,
        task_id: Annotated[str, Path(max_length=MAX_NAME)],
        wait: Annotated[
            float, Query(description=f"block up to this many seconds (max {MAX_WAIT_S:g})")
        ] = 0.0,
    ) -> Response:
        """A task: status, placement, pinned digest and, once it ended, its outcome."""
        wait = bodies.finite(wait, "wait", 0.0, 1e9)
        rec = await controller.wait(task_id, min(wait, MAX_WAIT_S), tenant=tenant)
        return task_json(rec)

    @app.post("/v1/tasks/{task_id}/cancel", response_model=CancelReceipt, tags=["tasks"])
    async def cancel_task(
        tenant: Tenant, task_id: Annotated[str, Path(max_length=MAX_NAME)]
    ) -> CancelReceipt:
        """Cancel a task (404: not yours; 409: already ended; 503: its node did not answer)."""
        return await controller.cancel(task_id, tenant=tenant)

    @app.get("/v1/tasks", response_model=list[TaskInfo], tags=["tasks"])
    async def list_tasks(
        tenant: Tenant, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[TaskInfo]:
        """Your tasks, newest first."""
        return [task_info(r) for r in await controller.list(tenant=tenant, limit=limit)]

    @app.get("/v1/nodes", response_model=list[NodeView], tags=["nodes"])
    async def list_nodes(tenant: Tenant) -> list[NodeView]:
        """Registered nodes: up or down, load, and the data each holds."""
        return controller.nodes()

    # --- functions -------------------------------------------------------------------------------
    @app.get("/v1/functions", response_model=list[FunctionInfo], tags=["functions"])
    async def list_functions(tenant: Tenant) -> list[FunctionInfo]:
        """Artifacts in the function repository, newest first."""
        return await controller.functions_list()

    @app.post(
        "/v1/functions",
        status_code=201,
        response_model=FunctionInfo,
        tags=["functions"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def upload_function(
        tenant: Tenant,
        request: Request,
        allow_rollback: Annotated[
            bool, Query(description="allow an older version to become current again")
        ] = False,
    ) -> FunctionInfo:
        """Upload a signed artifact (verified against the controller's trust store); the
        name becomes yours if nobody published it before."""
        bodies.require_type(request, ("application/octet-stream",), "an artifact")
        data = await bodies.read_body(request, bodies.MAX_UPLOAD_BYTES, "an artifact")
        return await controller.upload(data, tenant=tenant, allow_rollback=allow_rollback)

    app.include_router(pipeapi.router)  # /v1/pipelines
    app.include_router(migrate_router)  # moving stateful tasks: migrate, drain
    app.include_router(devices_router)  # devices, actuator commands, audit (fades.devices)
    mount_console(app)  # the operator console at / (fades.console)

    # --- service ---------------------------------------------------------------------------------
    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        """Liveness: no token needed."""
        return {"status": "ok", "nats": controller.connected, "version": __version__}

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics: no token needed."""
        return Response(controller.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
