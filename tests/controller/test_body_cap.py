"""Every request body is capped before anything reads it (fades.controller.bodycap).

Without the cap, FastAPI read a body-model route's whole body into memory before the bearer
token was even checked: a 300 MB POST to an actuator command took an unauthenticated client's
request to over 1 GB of controller memory. Now it is a 413 naming the limit, and the controller
serves the next request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from fades.controller.bodycap import MAX_OTHER_BODY_BYTES

from .conftest import FACILITIES, Bed, held
from .test_api import up

AUTH = {"Authorization": f"Bearer {FACILITIES}", "Content-Type": "application/json"}
#: routes whose body FastAPI parses (a model or ``Body()``)
ROUTES = [
    "/v1/devices/edge/fan-room1/commands",
    "/v1/tasks/some-task/migrate",
    "/v1/pipelines/some-pipeline/runs",
]


def chunks(total: int) -> Iterator[bytes]:
    """A JSON-looking body of ``total`` bytes, sent chunked (no Content-Length)."""
    yield b'{"command": "on", "pad": "'
    for _ in range(total // 65536):
        yield b"x" * 65536
    yield b'"}'


def test_an_oversized_body_is_refused_before_any_route_reads_it(bed: Bed, make_task: Any) -> None:
    bed.start_controller()
    bed.register("edge", [held("room1")])
    up(bed, "edge")
    big = b'{"command": "on", "pad": "' + b"x" * (MAX_OTHER_BODY_BYTES + 10) + b'"}'
    with httpx.Client(base_url=bed.url, timeout=60) as c:
        for path in [*ROUTES, "/v1/nodes/nowhere/drain"]:
            # declared too large: refused at once, with or without a token (any route)
            for headers in (AUTH, {"Content-Type": "application/json"}):
                resp = c.post(path, content=big, headers=headers)
                assert resp.status_code == 413, (path, resp.status_code, resp.text)
                body = resp.json()
                assert body["error_kind"] == "PayloadTooLarge", body
                assert f"limit of {MAX_OTHER_BODY_BYTES} bytes" in body["detail"], body
        for path in ROUTES:
            # streamed too large (chunked): refused once it passes the limit
            resp = c.post(path, content=chunks(4 * MAX_OTHER_BODY_BYTES), headers=AUTH)
            assert resp.status_code == 413, (path, resp.status_code, resp.text)
            assert resp.json()["error_kind"] == "PayloadTooLarge"
            # a small body still reaches the route (whatever the route then says of it)
            resp = c.post(path, json={"command": "on"}, headers=AUTH)
            assert resp.status_code != 413, (path, resp.text)
            assert resp.json()["error_kind"] != "internal", resp.text

        # the routes with their own (larger) limits keep them: a 2 MiB batch is read and
        # judged as a batch, not refused by the general cap
        batch = b'{"tasks": [], "pad": "' + b"x" * (2 * MAX_OTHER_BODY_BYTES) + b'"}'
        resp = c.post("/v1/tasks/batch", content=batch, headers=AUTH)
        assert resp.status_code != 413, resp.text

        # a key given twice in a task body is refused, not silently the last one
        dup = b'{"credentials": {"tenant": "facilities"}, "credentials": {"tenant": "visitor"}}'
        resp = c.post("/v1/tasks", content=dup, headers=AUTH)
        assert resp.status_code == 400 and "given twice" in resp.json()["detail"], resp.text

        # and the controller serves a good request after all of it
        resp = c.post("/v1/tasks", json=make_task("f"), headers=AUTH, params={"node": "edge"})
        assert resp.status_code in (202, 404, 422), resp.text
        assert c.get("/v1/tasks", headers=AUTH).status_code == 200
