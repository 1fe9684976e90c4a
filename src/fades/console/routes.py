"""The console's HTTP routes: the page, sign-in and out, the live feed, and its actions.

* ``GET /``: the console (or the sign-in form without a valid cookie);
* ``POST /console/login`` (form ``token``): sets the session cookie, the token itself,
  ``HttpOnly; SameSite=Strict``, and goes back to ``/``; ``POST /console/logout`` clears it;
* ``GET /console/events``: the live feed (:mod:`fades.console.live`);
* ``POST /console/submit`` ``{"kind": "task"|"pipeline", "text", "node", "where"}``: a
  task or pipeline pasted as YAML or JSON, parsed as the CLI parses a file, then sent to
  ``/v1/tasks`` or ``/v1/pipelines``;
* ``GET|POST /console/api/v1/...``: the page's other actions (migrate, device commands,
  cancel, a run's timeline), forwarded to the same ``/v1`` route with the cookie's token.

Every action needs the ``X-Fades-Console`` header: a page of another site cannot send it
without a CORS pre-flight, which the controller never grants (besides the strict cookie).
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from string import Template
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.responses import StreamingResponse

from fades.console import live
from fades.console.inproc import call
from fades.console.sensors import SensorFeed
from fades.controller.auth import CONSOLE_COOKIE, CookieTenant
from fades.controller.statuses import error_body, status_of
from fades.errors import BadRequest, FadesError, Unauthorized

#: largest form or action body the console takes (bytes)
MAX_FORM_BYTES = 1 * 2**20 + 4096
#: the /v1 routes the page may call through /console/api (method, path pattern)
ALLOWED = (
    ("GET", re.compile(r"/v1/(tasks|nodes|pipelines|devices|audit|functions)(/[^?]*)?")),
    ("POST", re.compile(r"/v1/tasks/[^/]+/(migrate|cancel)")),
    ("POST", re.compile(r"/v1/devices/[^/]+/[^/]+/commands")),
    ("POST", re.compile(r"/v1/pipelines/[^/]+/(cancel|runs)")),
)
#: what the console's pages may load: only this controller (no CDN, no other site)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_FILES = resources.files("fades.console")
router = APIRouter(include_in_schema=False)


def _page(name: str, **values: str) -> HTMLResponse:
    text = Template((_FILES / "templates" / name).read_text()).substitute(
        {k: html.escape(v) for k, v in values.items()}
    )
    return HTMLResponse(text, headers=_headers())


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _feed(request: Request) -> SensorFeed:
    state = request.app.state
    if getattr(state, "console_feed", None) is None:
        state.console_feed = SensorFeed(state.controller)
    feed: SensorFeed = state.console_feed
    return feed


def _action(request: Request) -> None:
    if request.headers.get("x-fades-console") != "1":
        raise BadRequest("console actions need the X-Fades-Console: 1 header")


Action = Annotated[None, Depends(_action)]


def _token(request: Request) -> str:
    return request.cookies.get(CONSOLE_COOKIE, "")


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    try:
        tenant = request.app.state.controller.tokens.tenant(_token(request))
    except Unauthorized:
        return _page("login.html", error="")
    return _page("index.html", tenant=tenant)


@router.post("/console/login")
async def login(request: Request) -> Response:
    raw = await request.body()
    if len(raw) > 4096:
        return _login_error("the sign-in form is larger than 4096 bytes", 400)
    token = (parse_qs(raw.decode("utf-8", "replace")).get("token") or [""])[0].strip()
    try:
        request.app.state.controller.tokens.tenant(token)
    except Unauthorized as exc:
        return _login_error(str(exc), 401)
    reply = RedirectResponse("/", status_code=303)
    reply.set_cookie(
        CONSOLE_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return reply


def _login_error(message: str, status: int) -> HTMLResponse:
    page = _page("login.html", error=message)
    page.status_code = status
    return page


@router.post("/console/logout")
async def logout() -> Response:
    reply = RedirectResponse("/", status_code=303)
    reply.delete_cookie(CONSOLE_COOKIE, path="/", httponly=True, samesite="strict")
    return reply


@router.get("/console/events")
async def events(tenant: CookieTenant, request: Request) -> StreamingResponse:
    body = live.events(request, _feed(request), _token(request), tenant)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


def _answer(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type="application/json")


@router.post("/console/submit")
async def submit(tenant: CookieTenant, request: Request, _: Action) -> Response:
    from fades.pipelines.spec import parse_pipeline_text
    from fades.task import parse_task_text

    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise BadRequest(f"a submission is at most {MAX_FORM_BYTES} bytes")
    try:
        form = json.loads(raw)
    except ValueError:
        raise BadRequest("a submission is JSON {kind, text, node, where}") from None
    if not isinstance(form, dict) or form.get("kind") not in ("task", "pipeline"):
        raise BadRequest("kind must be 'task' or 'pipeline'")
    text = form.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("paste a task or pipeline (YAML or JSON) first")
    query: dict[str, Any] = {}
    try:
        if form["kind"] == "task":
            spec: dict[str, Any] = parse_task_text(text, source="the pasted task").model_dump(
                mode="json"
            )
            path = "/v1/tasks"
            node = form.get("node") or None
            query = {"node": node, "where": form.get("where") or "edge"}
        else:
            spec = parse_pipeline_text(text, source="the pasted pipeline").to_dict()
            path = "/v1/pipelines"
            query = {"replace": "true" if form.get("replace") else None}
    except FadesError as exc:
        return JSONResponse(error_body(exc), status_code=status_of(exc))
    ans = await call(
        request.app,
        "POST",
        path,
        token=_token(request),
        query=query,
        body=json.dumps(spec).encode(),
    )
    return _answer(ans.status, ans.body)


@router.api_route("/console/api/{path:path}", methods=["GET", "POST"])
async def forward(tenant: CookieTenant, request: Request, path: str, _: Action) -> Response:
    target = "/" + path
    if not any(m == request.method and p.fullmatch(target) for m, p in ALLOWED):
        raise BadRequest(f"the console does not forward {request.method} {target}")
    body = await request.body() if request.method == "POST" else b""
    if len(body) > MAX_FORM_BYTES:
        raise BadRequest(f"a console action is at most {MAX_FORM_BYTES} bytes")
    query = dict(request.query_params)
    ans = await call(
        request.app, request.method, target, token=_token(request), query=query, body=body
    )
    return _answer(ans.status, ans.body)


def mount(app: FastAPI) -> None:
    """Serve the console from ``app`` (the controller's API): the routes and its assets."""
    app.include_router(router)
    static = StaticFiles(directory=str(_FILES / "static"))
    app.mount("/console/static", static, name="console-static")
