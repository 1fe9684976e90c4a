"""Calls from the console into the controller's own ``/v1`` API, in process.

The console does not re-implement any route: each of its actions (and each live snapshot)
is the very same ``/v1`` request a CLI would make, with the cookie's token as the bearer
token, sent straight into the ASGI app (no socket). So the console gets the API's token
check, tenant scoping, validation messages (``detail`` and ``problems``) and status codes
unchanged.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.types import ASGIApp, Message

#: largest answer the console takes from one in-process call (bytes)
MAX_ANSWER_BYTES = 8 * 2**20


@dataclass(frozen=True, slots=True)
class Answer:
    """One in-process answer: status and body."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    token: str,
    query: dict[str, Any] | None = None,
    body: bytes = b"",
    source: str = "console",
) -> Answer:
    """Send ``method path`` with ``Authorization: Bearer <token>`` into ``app``; the
    ``X-Fades-Source`` header names the console as the origin (the audit log records it)."""
    if not path.startswith("/v1/"):
        raise ValueError(f"the console calls only /v1 routes, not {path!r}")
    q = urlencode({k: v for k, v in (query or {}).items() if v is not None})
    headers = [
        (b"host", b"console.local"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-fades-source", source.encode()),
    ]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": q.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("console.local", 80),
    }
    sent = False
    status = 500
    chunks: list[bytes] = []
    size = 0

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # never disconnects: the call is bounded by its caller
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise ValueError(f"an answer of {path} exceeds {MAX_ANSWER_BYTES} bytes")
            chunks.append(chunk)

    await app(scope, receive, send)
    return Answer(status, b"".join(chunks))
