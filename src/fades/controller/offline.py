"""Submitting for a node that is offline: queue the task in the hub, or refuse it.

A task's ``when_offline`` says what happens when the node that must run it (named by the
client, or the only one holding its data) is down:

* ``queue``: the task is accepted (202) and published to the hub's task stream, where it
  waits until the node returns (a site cut off from the hub keeps working and comes back);
  the receipt's ``queued`` says so;
* ``refuse``: 503 ``NodeUnavailable``, saying that the node is offline and that
  ``when_offline: queue`` would wait for it.

The default (``queue``) applies to nodes at an edge site. A node attached to the hub itself
that is down was most likely stopped or lost, so for it a task is refused as before unless it
says ``when_offline: queue`` explicitly.
"""

from __future__ import annotations

import time

from fades.controller.registry import NodeEntry, Registry
from fades.errors import FadesError, NodeUnavailable
from fades.placers.base import Placement
from fades.placers.locality import covers
from fades.task import Task


def policy(task: Task, entry: NodeEntry) -> str:
    """``queue`` or ``refuse`` for ``task`` on the (down) node of ``entry``."""
    if "when_offline" in task.model_fields_set or entry.info.site:
        return task.when_offline
    return "refuse"


def since(entry: NodeEntry) -> str:
    """When the node was last heard of, as UTC wall time."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.seen_at))


def place_offline(
    registry: Registry, task: Task, node: str | None, refused: FadesError
) -> Placement:
    """A placement on an offline node, if the task's policy queues it; else raise.

    ``refused`` is what placing among the up nodes raised (NodeUnavailable for a named node,
    NoPlacement when only down nodes hold the data); it is raised again when no offline node
    fits and the task did not ask for anything else.
    """
    down = registry.down()
    if node is not None:
        candidates = [e for e in down if e.info.name == node]
    else:
        candidates = [e for e in down if all(covers(e.info, op) for op in task.data)]
        if not task.data:
            candidates = []  # inputs only: any up node serves it; nothing to wait for
    if not candidates:
        raise refused
    # the node heard from most recently is the one most likely back soon
    entry = max(candidates, key=lambda e: e.seen_at)
    name = entry.info.name
    where = f"node {name}" + (f" (site {entry.info.site})" if entry.info.site else "")
    if policy(task, entry) == "refuse":
        if "when_offline" not in task.model_fields_set and not entry.info.site:
            raise refused
        raise NodeUnavailable(
            f"{where} is offline since {since(entry)}; the task says when_offline: refuse "
            "(when_offline: queue would wait in the hub until it returns)",
            node=name,
            task_id=task.id,
        )
    queued = f"{where} is offline since {since(entry)}; the task waits in the hub until it returns"
    return Placement(name, queued, "edge", {"queued": queued})
