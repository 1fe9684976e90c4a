"""The console's live feed: ``GET /console/events``, server-sent events.

Every :data:`REFRESH_S` seconds the feed takes a snapshot of what the signed-in tenant may
see, through the same ``/v1`` routes (in process, :mod:`fades.console.inproc`), and sends
each part whose content changed as one event: ``fleet`` (nodes), ``tasks`` (the newest
:data:`TASKS` with outcome, timing, traceback, logs and placement decision), ``summary``
(those tasks by status), ``pipelines`` (each with its plan, queues, drops and newest run's
timeline), ``stateful`` (owner node and checkpoint), ``devices`` (devices and audit), and
``sensors`` (live readings, every :data:`SENSORS_S` seconds). A ``: keepalive`` comment
goes out when nothing changed for :data:`KEEPALIVE_S` seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp

from fades.console.inproc import call
from fades.console.sensors import Key, SensorFeed
from fades.console.stateful import stateful_tasks

#: seconds between two snapshots (``FADES_CONSOLE_REFRESH_S``)
REFRESH_S = float(os.environ.get("FADES_CONSOLE_REFRESH_S", "1.0"))
#: seconds between two updates of the sensor charts (``FADES_CONSOLE_SENSORS_S``)
SENSORS_S = float(os.environ.get("FADES_CONSOLE_SENSORS_S", "5.0"))
#: tasks shown (the tenant's newest)
TASKS = 200
#: pipelines shown in detail (the tenant's newest)
PIPELINES = 10
#: audit entries shown
AUDIT = 50
#: a task result longer than this (JSON characters) is shown cut
RESULT_CHARS = 2000
#: seconds of silence before a keep-alive comment
KEEPALIVE_S = 15.0


def _trim(task: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(task.get("result"))
    if len(text) > RESULT_CHARS:
        task["result"] = text[:RESULT_CHARS] + f"... ({len(text):,} characters)"
    return task


async def _pipelines(app: ASGIApp, token: str) -> list[dict[str, Any]]:
    listed = await call(app, "GET", "/v1/pipelines", token=token)
    if not listed.ok:
        return []
    out = []
    for row in (listed.json() or [])[:PIPELINES]:
        name = str(row.get("name") or row.get("pipeline") or "")
        if not name:
            continue
        detail = await call(app, "GET", f"/v1/pipelines/{name}", token=token)
        runs = await call(
            app, "GET", f"/v1/pipelines/{name}/runs", token=token, query={"limit": 10}
        )
        item: dict[str, Any] = {"row": row, "status": detail.json() if detail.ok else None}
        item["runs"] = runs.json() if runs.ok else []
        if item["runs"]:
            run_id = str(item["runs"][0].get("run") or item["runs"][0].get("run_id") or "")
            if run_id:
                tl = await call(app, "GET", f"/v1/pipelines/{name}/runs/{run_id}", token=token)
                item["timeline"] = tl.json() if tl.ok else None
        out.append(item)
    return out


async def _devices(app: ASGIApp, token: str) -> dict[str, Any]:
    devices = await call(app, "GET", "/v1/devices", token=token)
    if devices.status == 404:
        return {"available": False, "devices": [], "audit": []}
    audit = await call(app, "GET", "/v1/audit", token=token, query={"limit": AUDIT})
    return {
        "available": devices.ok,
        "devices": devices.json() if devices.ok else [],
        "audit": audit.json() if audit.ok else [],
        "detail": None if devices.ok else (devices.json() or {}).get("detail"),
    }


def _sensor_key(d: dict[str, Any]) -> Key:
    topic = str(d.get("topic") or "").split("/")
    if len(topic) == 4 and topic[0] == "sensors":
        return (topic[1], topic[2], topic[3])
    return (str(d.get("node")), str(d.get("location")), str(d.get("type")))


def _sensor_filter(devices: dict[str, Any]) -> Any:
    """Which live readings this tenant sees: those of the sensors the device registry lists
    for it (the nodes' access policies decide); none without a device registry."""
    allowed: set[Key] = {
        _sensor_key(d) for d in devices.get("devices") or [] if d.get("kind") == "sensor"
    }
    return lambda key: key in allowed


async def snapshot(
    app: ASGIApp, feed: SensorFeed, token: str, sensors: bool = True
) -> dict[str, Any]:
    """Every part of the console's live view, as the tenant of ``token`` may see it (the
    sensor readings only with ``sensors``)."""
    from fades.controller.service import Controller

    controller: Controller = feed.controller
    snap: dict[str, Any] = {}
    nodes = await call(app, "GET", "/v1/nodes", token=token)
    snap["fleet"] = {
        "nodes": nodes.json() if nodes.ok else [],
        "down_after_s": controller.down_after,
    }
    tasks = await call(app, "GET", "/v1/tasks", token=token, query={"limit": TASKS})
    rows = [_trim(t) for t in tasks.json()] if tasks.ok else []
    snap["tasks"] = rows
    counts: dict[str, int] = {}
    for t in rows:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    snap["summary"] = {"by_status": counts, "shown": len(rows), "limit": TASKS}
    snap["pipelines"] = await _pipelines(app, token)
    snap["stateful"] = await stateful_tasks(controller, rows)
    snap["devices"] = await _devices(app, token)
    if sensors:
        snap["sensors"] = feed.snapshot(_sensor_filter(snap["devices"]))
    return snap


async def events(request: Request, feed: SensorFeed, token: str, tenant: str) -> AsyncIterator[str]:
    """The SSE text of one open console page (ends when the page goes away)."""
    yield f"event: hello\ndata: {json.dumps({'tenant': tenant, 'refresh_s': REFRESH_S})}\n\n"
    try:
        await feed.ensure_started()
    except Exception as exc:
        yield f"event: notice\ndata: {json.dumps({'detail': f'no live readings: {exc}'})}\n\n"
    sent: dict[str, str] = {}
    quiet_since = time.monotonic()
    charts_at = -SENSORS_S
    # ends when the page goes, or when the controller stops (it waits for open responses)
    while not await request.is_disconnected() and not getattr(request.app.state, "closing", False):
        charts = time.monotonic() - charts_at >= SENSORS_S
        if charts:
            charts_at = time.monotonic()
        snap = await snapshot(request.app, feed, token, charts)
        for name, value in snap.items():
            text = json.dumps(value, separators=(",", ":"), default=str)
            if sent.get(name) != text:
                sent[name] = text
                quiet_since = time.monotonic()
                yield f"event: {name}\ndata: {text}\n\n"
        if time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keepalive\n\n"
        await asyncio.sleep(REFRESH_S)
