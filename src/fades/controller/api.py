"""The controller's HTTP API (FastAPI; OpenAPI docs at ``/docs``).

Every ``/v1`` route needs ``Authorization: Bearer <token>``; the token names the tenant, and a
tenant sees only its own tasks. Errors answer ``{"detail": <message>, "error_kind": <class>}``
(plus ``problems`` for a malformed task) with the status of :data:`STATUS`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fades import __version__
from fades.controller.metrics import CONTENT_TYPE_LATEST
from fades.controller.models import FunctionInfo, NodeView, SubmitReceipt, TaskInfo
from fades.controller.service import Controller
from fades.errors import (
    ArtifactError,
    ArtifactFormatError,
    ControllerError,
    DuplicateTask,
    FabricError,
    FadesError,
    Forbidden,
    NodeUnavailable,
    NoPlacement,
    SignatureError,
    TaskNotFound,
    TaskValidationError,
    Unauthorized,
    UnknownNode,
)

log = logging.getLogger("fades.controller")

#: HTTP status per error class (the first match in this order wins)
STATUS: list[tuple[type[FadesError], int]] = [
    (TaskValidationError, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (TaskNotFound, 404),
    (UnknownNode, 404),
    (ArtifactFormatError, 422),
    (SignatureError, 422),
    (ArtifactError, 404),
    (DuplicateTask, 409),
    (NoPlacement, 422),
    (NodeUnavailable, 503),
    (FabricError, 503),
    (ControllerError, 400),
]

#: longest ``?wait=`` a GET may block (seconds)
MAX_WAIT_S = 60.0

_bearer = HTTPBearer(auto_error=False, description="a token from the controller's tokens file")


def _tenant(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    controller: Controller = request.app.state.controller
    return controller.authenticate(creds.credentials if creds else None)


#: the caller's tenant, from its bearer token (401 without a known token)
Tenant = Annotated[str, Depends(_tenant)]


def status_of(exc: FadesError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def create_app(controller: Controller) -> FastAPI:
    """The HTTP API over ``controller`` (which must be started in the serving loop)."""
    app = FastAPI(
        title="fades controller",
        version=__version__,
        description="Offload tasks to edge nodes next to their data, or run them in the cloud.",
    )

    app.state.controller = controller

    @app.exception_handler(FadesError)
    async def _fades_error(_: Request, exc: FadesError) -> JSONResponse:
        code = status_of(exc)
        body: dict[str, Any] = {"detail": str(exc), "error_kind": exc.kind}
        if isinstance(exc, TaskValidationError) and exc.problems:
            body["problems"] = [{"field": f, "reason": r} for f, r in exc.problems]
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return JSONResponse(body, status_code=code, headers=headers)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in a request")
        return JSONResponse(
            {"detail": f"internal error: {type(exc).__name__}: {exc}", "error_kind": "internal"},
            status_code=500,
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()
        ]
        detail = "; ".join(f"{p['field']}: {p['reason']}" for p in problems)
        return JSONResponse(
            {
                "detail": f"malformed request: {detail}",
                "error_kind": "TaskValidationError",
                "problems": problems,
            },
            status_code=400,
        )

    @app.post("/v1/tasks", status_code=202, response_model=SubmitReceipt, tags=["tasks"])
    async def submit_task(
        tenant: Tenant,
        task: Annotated[dict[str, Any], Body(description="the task: credentials, data, function")],
        node: Annotated[str | None, Query(description="run on this node (default: placed)")] = None,
        where: Annotated[
            Literal["edge", "cloud"], Query(description="at the node, or here on its data")
        ] = "edge",
    ) -> SubmitReceipt:
        """Submit a task, to a named node or placed by data locality."""
        return await controller.submit(task, tenant=tenant, node=node, where=where)

    @app.get("/v1/tasks/{task_id}", response_model=TaskInfo, tags=["tasks"])
    async def get_task(
        tenant: Tenant,
        task_id: str,
        wait: Annotated[
            float, Query(ge=0, description=f"block up to this many seconds (max {MAX_WAIT_S:g})")
        ] = 0.0,
    ) -> TaskInfo:
        """A task's status, result and timing breakdown."""
        return await controller.wait(task_id, min(wait, MAX_WAIT_S), tenant=tenant)

    @app.get("/v1/tasks", response_model=list[TaskInfo], tags=["tasks"])
    async def list_tasks(
        tenant: Tenant, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[TaskInfo]:
        """Your tasks, newest first."""
        return controller.list(tenant=tenant, limit=limit)

    @app.get("/v1/nodes", response_model=list[NodeView], tags=["nodes"])
    async def list_nodes(tenant: Tenant) -> list[NodeView]:
        """Registered nodes: up or down, load, and the data each holds."""
        return controller.nodes()

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
    async def upload_function(tenant: Tenant, request: Request) -> FunctionInfo:
        """Upload a signed artifact (verified against the controller's trust store)."""
        return await controller.upload(await request.body())

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        """Liveness: no token needed."""
        return {"status": "ok", "nats": controller.connected, "version": __version__}

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics: no token needed."""
        return Response(controller.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
