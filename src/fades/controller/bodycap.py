"""A cap on every HTTP request body, before any route (or the bearer-token check) reads it.

The task, batch, pipeline and upload routes read their bodies themselves, in chunks, refusing
one past their own limit (``bodies.read_body``). Every other route that takes a body (actuator
commands, migrations, drains, pipeline runs, the console's forms) is parsed by FastAPI, which
reads the whole body into memory first, even for a request that then fails authentication: a
300 MB body took the controller from 180 MB to over 1 GB of memory. :class:`BodyCap` refuses
such a body with 413 ``PayloadTooLarge``: at once when its declared ``Content-Length`` is over
the limit, and while it streams in when it is sent chunked.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: largest body of a route that does not read its body itself (bytes)
MAX_OTHER_BODY_BYTES = 1024 * 1024

#: routes that read their bodies in chunks under their own (documented) limits
OWN_READERS: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/v1/tasks"),
        ("POST", "/v1/tasks/batch"),
        ("POST", "/v1/tasks/run"),
        ("POST", "/v1/functions"),
        ("POST", "/v1/pipelines"),
        ("POST", "/v1/pipelines/plan"),
    }
)


def too_large(limit: int, size: int | None = None) -> str:
    of = f" of {size} bytes" if size is not None else ""
    return f"a request body{of} exceeds the limit of {limit} bytes"


class BodyCap:
    """ASGI middleware: a body over ``limit`` bytes is refused (413) before it is kept."""

    def __init__(self, app: ASGIApp, limit: int = MAX_OTHER_BODY_BYTES) -> None:
        if limit < 0:
            raise ValueError(f"limit must be at least 0, not {limit}")
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in OWN_READERS:
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _refuse(send, too_large(limit, int(value)))
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # the route's error handler answers 413 (see api.py)
                    raise HTTPException(413, too_large(limit))
            return message

        await self.app(scope, counted, send)


async def _refuse(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail, "error_kind": "PayloadTooLarge"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
