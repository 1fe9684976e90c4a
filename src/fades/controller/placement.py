"""Auto-placement by data locality.

A task goes to a node that holds the data every one of its operations selects
(:meth:`NodeInfo.holds <fades.fabric.protocol.NodeInfo.holds>`). Among several such nodes the
least loaded wins (lowest ``load.score``, ties by name). If none is up, the task is refused
with :class:`~fades.errors.NoPlacement` naming the first operation no up node can serve, its
selector, and whether a node that is down holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fades.errors import NoPlacement
from fades.fabric.protocol import NodeInfo
from fades.task import DataOp, Task


@dataclass(slots=True, frozen=True)
class Placement:
    node: str
    reason: str


def describe_op(op: DataOp) -> str:
    """``op 't' (sqlite: location=room1, sensor_type=temperature)``."""
    sel = op.select.model_dump(exclude_none=True, mode="json")
    parts = [f"{k}={'+'.join(v) if isinstance(v, list) else v}" for k, v in sel.items()]
    return f"data op {op.name!r} ({op.connector}: {', '.join(parts) or 'everything'})"


def place(task: Task, up: Sequence[NodeInfo], down: Sequence[NodeInfo] = ()) -> Placement:
    """The node ``task`` should run on, and why.

    Args:
        task: the validated task.
        up: registry entries of the nodes that are up.
        down: entries of the nodes that are down (only to explain a refusal).

    Raises:
        NoPlacement: no up node holds every data operation of the task.
    """
    ops = list(task.data)
    holders = [n for n in up if all(n.holds(op) for op in ops)]
    if holders:
        best = min(holders, key=lambda n: (n.load.score, n.name))
        others = len(holders) - 1
        why = f"data locality: holds {', '.join(repr(op.name) for op in ops)}"
        if others:
            why += f"; least loaded of {len(holders)} holders (load {best.load.score:.2f})"
        return Placement(best.name, why)
    for op in ops:
        if not any(n.holds(op) for n in up):
            asleep = sorted(n.name for n in down if n.holds(op))
            if asleep:
                why = f"node(s) {', '.join(asleep)} hold it but are down"
            elif not up:
                why = "no node is up"
            else:
                why = "no node holds it"
            raise NoPlacement(
                f"cannot place task: no node that is up holds {describe_op(op)}; {why}",
                task_id=task.id,
                op=op.name,
            )
    where = "; ".join(
        f"{op.name!r} on {', '.join(sorted(n.name for n in up if n.holds(op)))}" for op in ops
    )
    raise NoPlacement(
        f"cannot place task: no single node holds all its data ({where}); "
        "split it into one task per node",
        task_id=task.id,
    )
