"""The default placer: data locality (the task goes where its data is).

A task goes to a node that holds the data every one of its operations selects: each location
and sensor type an operation names (:func:`covers`; a node that holds only some of them would
run the task on part of its data). Among several such nodes the
least loaded wins (lowest ``load.score``, ties by name). If none is up, the task is refused
with :class:`~fades.errors.NoPlacement` naming the first operation no up node can serve, its
selector, and whether a node that is down holds it.
"""

from __future__ import annotations

from collections.abc import Sequence

from fades.errors import NoPlacement
from fades.fabric.protocol import DataHeld, NodeInfo
from fades.placers.base import Placement
from fades.task import DataOp, Task


def describe_op(op: DataOp) -> str:
    """``data op 't' (sqlite: location=room1, sensor_type=temperature)``."""
    sel = op.select.model_dump(exclude_none=True, mode="json")
    parts = [f"{k}={'+'.join(v) if isinstance(v, list) else v}" for k, v in sel.items()]
    return f"data op {op.name!r} ({op.connector}: {', '.join(parts) or 'everything'})"


def lacking(node: NodeInfo, op: DataOp, got: list[DataHeld] | None = None) -> list[str]:
    """The locations and sensor types ``op`` names that ``node`` holds no selected data for
    (``got``: ``node.matching(op)`` if already known)."""
    got = node.matching(op) if got is None else got
    locs = {d.location for d in got}
    types = {d.sensor_type for d in got}
    sel = op.select
    miss = [f"location {x}" for x in dict.fromkeys(sel.locations or ()) if x not in locs]
    miss += [f"sensor type {x}" for x in dict.fromkeys(sel.sensor_types or ()) if x not in types]
    return miss


def covers(node: NodeInfo, op: DataOp) -> bool:
    """Whether ``node`` holds data for every location and sensor type ``op`` names."""
    got = node.matching(op)  # (once: the selector's window is worked out per call)
    return bool(got) and not lacking(node, op, got)


def holders(
    task: Task, up: Sequence[NodeInfo], down: Sequence[NodeInfo] = (), *, partial: bool = False
) -> list[NodeInfo]:
    """The up nodes that hold every data operation of ``task`` (at least one).

    A node holds an operation when it holds data for each location and sensor type the
    operation names (:func:`covers`); with ``partial`` (a scattered pipeline stage, whose
    instances each serve their own part), some of it is enough.

    Raises:
        NoPlacement: none does; the message names the operation and any down holder.
    """

    def fits(n: NodeInfo, op: DataOp) -> bool:
        return n.holds(op) if partial else covers(n, op)

    ops = list(task.data)
    if not ops and not up:
        raise NoPlacement("cannot place task: no node is up", task_id=task.id)
    found = [n for n in up if all(fits(n, op) for op in ops)]
    if found:
        return found
    for op in ops:
        if not any(fits(n, op) for n in up):
            asleep = sorted(n.name for n in down if fits(n, op))
            if asleep:
                why = f"node(s) {', '.join(asleep)} hold it but are down"
            elif not up:
                why = "no node is up"
            elif any(n.holds(op) for n in up):
                parts = [f"{n.name} lacks {', '.join(lacking(n, op))}" for n in up if n.holds(op)]
                raise NoPlacement(
                    f"cannot place task: no node that is up holds all that {describe_op(op)} "
                    f"selects ({'; '.join(parts[:8])}); split it into one task per node",
                    task_id=task.id,
                    op=op.name,
                )
            else:
                why = "no node holds it"
            raise NoPlacement(
                f"cannot place task: no node that is up holds {describe_op(op)}; {why}",
                task_id=task.id,
                op=op.name,
            )
    where = "; ".join(
        f"{op.name!r} on {', '.join(sorted(n.name for n in up if fits(n, op)))}" for op in ops
    )
    raise NoPlacement(
        f"cannot place task: no single node holds all its data ({where}); "
        "split it into one task per node",
        task_id=task.id,
    )


def draining_refusal(task: Task, refused: NoPlacement, draining: Sequence[NodeInfo]) -> NoPlacement:
    """``refused`` again, naming the draining nodes that would have served ``task``.

    A node being drained takes no new work, so placing among the others can fail although a
    draining node holds the data; the user should hear that, and how to end the drain.
    """
    ops = list(task.data)
    fit = sorted(n.name for n in draining if all(covers(n, op) for op in ops))
    if not fit:
        return refused
    names = ", ".join(fit)
    what = f"its data ({'; '.join(describe_op(op) for op in ops)})" if ops else "it"
    undrain = " or ".join(f"'fades nodes undrain {n}'" for n in fit[:3])
    return NoPlacement(
        f"cannot place task: node(s) {names} could run {what} but are being drained "
        f"(a draining node takes no new work); run {undrain}, or wait until the drain ends",
        task_id=task.id,
        **{k: v for k, v in refused.context.items() if k != "task_id"},
        draining=fit,
    )


def locality_reason(task: Task) -> str:
    if not task.data:
        return "reads no node's data (inputs only): any node can serve it"
    return f"data locality: holds {', '.join(repr(op.name) for op in task.data)}"


class LocalityPlacer:
    """Data locality, then the least loaded holder (ties by name)."""

    name = "locality"

    def place(self, task: Task, up: Sequence[NodeInfo], down: Sequence[NodeInfo] = ()) -> Placement:
        found = holders(task, up, down)
        best = min(found, key=lambda n: (n.load.score, n.name))
        why = locality_reason(task)
        if len(found) > 1:
            kind = "holders" if task.data else "nodes"  # an inputs-only task: any node
            why += f"; least loaded of {len(found)} {kind} (load {best.load.score:.2f})"
        held = {n.name for n in found}
        refused = [(n.name, "does not hold the task's data") for n in up if n.name not in held]
        refused += [(n.name, "down") for n in down]
        decision = {
            "placer": self.name,
            "where": "edge",
            "target": best.name,
            "candidates": [
                {"target": n.name, "where": "edge", "load": round(n.load.score, 3)}
                for n in sorted(found, key=lambda n: (n.load.score, n.name))[:20]
            ],
            "rejected": [{"target": t, "reason": r} for t, r in refused[:20]],
            "rejected_more": max(0, len(refused) - 20),
        }
        return Placement(best.name, why, "edge", decision)
