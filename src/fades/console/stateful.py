"""The console's view of stateful tasks: where each runs and its newest checkpoint.

A stateful task on the fabric has a record in the ``fades_state`` bucket (see
:mod:`fades.state.kv`): the node that owns its live instance and its newest sealed
checkpoint. The console reads the checkpoint's header (task, node, ``seq``, time) and its
size for display only; it never opens (unseals) the state, and a record it cannot read is
shown as such.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fades.errors import FadesError
from fades.state.kv import BUCKET, kv_key, unpack

if TYPE_CHECKING:
    from fades.controller.service import Controller

_HEAD = struct.Struct("<4sI")  # fades.state.seal's record header
_MAC = 32
#: stateful tasks looked up per snapshot (the tenant's newest unfinished ones)
MAX_STATEFUL = 50


def peek(sealed: bytes) -> dict[str, Any]:
    """``{seq, created_at, node, size}`` of a sealed checkpoint, unverified (display only)."""
    if len(sealed) < _HEAD.size + _MAC:
        return {"unreadable": "truncated"}
    _, hlen = _HEAD.unpack_from(sealed)
    try:
        head = json.loads(sealed[_HEAD.size : _HEAD.size + hlen])
    except ValueError:
        return {"unreadable": "not a fades checkpoint"}
    if not isinstance(head, dict):
        return {"unreadable": "not a fades checkpoint"}
    return {
        "seq": head.get("seq"),
        "created_at": head.get("created_at"),
        "written_by": head.get("node"),
        "size": len(sealed) - _HEAD.size - hlen - _MAC,
    }


async def stateful_tasks(controller: Controller, tasks: Iterable[dict[str, Any]]) -> list[Any]:
    """The stateful ones among a tenant's ``tasks`` (their API views): for each, the node
    owning its live instance and its newest checkpoint's age, ``seq`` and size."""
    try:
        kv = await controller.bus.kv(BUCKET, history=1)
    except FadesError:
        return []
    now = time.time()
    out: list[Any] = []
    for task in tasks:
        if task.get("status") not in ("accepted", "dispatched") or len(out) >= MAX_STATEFUL:
            continue
        try:
            entry = await kv.get(kv_key(str(task["task_id"])))
        except FadesError:
            continue
        if entry is None or not entry.value:
            continue
        try:
            owner, sealed = unpack(entry.value)
        except FadesError:
            continue
        row: dict[str, Any] = {
            "task_id": task["task_id"],
            "node": owner or task.get("node"),
            "revision": entry.revision,
            "checkpoint": None,
        }
        if sealed:
            ck = peek(sealed)
            if isinstance(ck.get("created_at"), int | float):
                ck["age_s"] = round(max(0.0, now - float(ck["created_at"])), 1)
            row["checkpoint"] = ck
        out.append(row)
    return out
