"""Which node runs which stage of a pipeline, and why: the plan, and re-plans on failover.

:func:`plan_pipeline` maps a validated spec onto the nodes that are up:

* a *scattered* stage gets one instance on every up node that holds all of its data (the
  instance is named after the node);
* another stage with data goes where the Placer puts a task made of it (data locality by
  default), or on the node it is pinned to (``node:``), which must be up and hold the data;
* a stage without data stays on the node of its upstream when that is a single instance (no
  network hop); after a scatter or a fan-in it goes next to the downstream stage that holds
  data, else on the least loaded node among its inputs' nodes, else on the least loaded up
  node. A data-less stage that would put more than ``load.capacity`` stages of this pipeline
  on one node goes to the least loaded other node instead, and its reason says so.

:func:`replan` (in :mod:`fades.pipelines.replan`, re-exported here) applies each stage's
``failover`` when nodes go down (substitute, skip, wait) and returns stages in skip/wait to
their node when it is back; :func:`plan_rows` turns a plan into table rows for the CLI and
the HTTP API. Every assignment carries a one-line reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fades.errors import NoPlacement, PipelineValidationError, Unplaceable
from fades.fabric.protocol import NodeInfo
from fades.pipelines.layout import Layout, stage_ops, stage_task, unplaceable
from fades.pipelines.protocol import Assignment, Plan
from fades.pipelines.replan import replan
from fades.pipelines.spec import PipelineSpec, StageSpec
from fades.placers import LocalityPlacer, Placer, describe_op

__all__ = ["plan_pipeline", "plan_rows", "replan"]


def _place_data(
    spec: PipelineSpec,
    stage: StageSpec,
    lay: Layout,
    up: Sequence[NodeInfo],
    down: Sequence[NodeInfo],
    placer: Placer,
) -> list[Assignment]:
    """Assignments for a stage with data (scattered or placed) or a pinned stage."""
    if stage.node is not None:
        pinned = lay.up.get(stage.node)
        if pinned is None:
            state = "down" if any(n.name == stage.node for n in down) else "not a known node"
            raise Unplaceable(
                f"cannot place stage {stage.name!r}: it is pinned to node {stage.node!r}, "
                f"which is {state}",
                stage=stage.name,
                node=stage.node,
            )
        missing = [op for op in stage.data if not pinned.holds(op)]
        if missing:
            raise Unplaceable(
                f"cannot place stage {stage.name!r}: it is pinned to node {stage.node!r}, "
                f"which does not hold {describe_op(missing[0])}",
                stage=stage.name,
                node=stage.node,
                op=missing[0].name,
            )
        held = f"; holds {stage_ops(stage)}" if stage.data else ""
        return [Assignment(stage=stage.name, node=stage.node, reason=f"pinned to it{held}")]
    task = stage_task(spec, stage)
    if stage.scatter:
        from fades.placers.locality import holders

        try:
            found = sorted(holders(task, up, down, partial=True), key=lambda n: n.name)
        except NoPlacement as exc:
            raise unplaceable(stage, exc) from None
        return [
            Assignment(
                stage=stage.name,
                instance=n.name,
                node=n.name,
                reason=f"holds {stage_ops(stage)} (scattered: {i + 1} of {len(found)} holders)",
            )
            for i, n in enumerate(found)
        ]
    try:
        where = placer.place(task, up, down)
    except NoPlacement as exc:
        raise unplaceable(stage, exc) from None
    extra = where.reason.split("; ", 1)[1] if "; " in where.reason else ""
    why = f"holds {stage_ops(stage)}" + (f"; {extra}" if extra else "")
    others = sum(1 for n in up if all(n.holds(op) for op in stage.data)) - 1
    if others > 0:
        why += f"; {others} other node(s) hold matching data (scatter: true runs on each)"
    if getattr(placer, "name", "locality") != "locality":
        why += f" (placer {placer.name})"
    return [Assignment(stage=stage.name, node=where.node, reason=why)]


def plan_pipeline(
    spec: PipelineSpec,
    up: Sequence[NodeInfo],
    down: Sequence[NodeInfo] = (),
    placer: Placer | None = None,
    *,
    now: float | None = None,
) -> Plan:
    """The plan of ``spec`` on the nodes that are up (``down`` only explains refusals).

    Raises:
        Unplaceable: a stage no up node can serve (``context['stage']`` names it).
        PipelineValidationError: ``run.until`` is already past.
    """
    now = time.time() if now is None else now
    placer = placer or LocalityPlacer()
    ends_at: float | None = None
    if spec.run.until is not None:
        ends_at = spec.run.until.timestamp()
        if ends_at <= now:
            msg = f"run.until ({spec.run.until.isoformat()}) is already past"
            raise PipelineValidationError(
                f"invalid pipeline: {msg}", problems=[("run.until", "already past")]
            )
    elif spec.run.for_s is not None:
        ends_at = now + spec.run.for_s
    lay = Layout(spec, up)
    order = spec.topo_order()
    for name in order:  # stages with data (and pinned ones) first: they cannot move
        st = spec.stage(name)
        if st.data or st.node is not None:
            for a in _place_data(spec, st, lay, up, down, placer):
                lay.add(a)
    for name in order:
        st = spec.stage(name)
        if name in lay.by_stage:
            continue
        if not lay.up:
            raise Unplaceable(f"cannot place stage {name!r}: no node is up", stage=name)
        node, why = lay.dataless(st)
        lay.add(Assignment(stage=name, node=node, reason=why))
    assignments = [a for name in order for a in lay.by_stage[name]]
    return Plan(
        pipeline=spec.name,
        tenant=spec.tenant,
        spec=spec.to_dict(),
        assignments=assignments,
        submitted_at=now,
        ends_at=ends_at,
    )


def plan_rows(plan: Plan, spec: PipelineSpec) -> list[dict[str, str]]:
    """One row per stage instance, in data-flow order, for a table."""
    order = {name: i for i, name in enumerate(spec.topo_order())}
    roles = spec.roles()
    rows = []
    for a in sorted(plan.assignments, key=lambda a: (order.get(a.stage, 1 << 30), a.instance)):
        after = spec.stage(a.stage).after if a.stage in roles else []
        rows.append(
            {
                "stage": a.stage,
                "role": roles.get(a.stage, "?"),
                "instance": a.instance,
                "node": a.node,
                "mode": a.mode,
                "reason": a.reason,
                "after": ", ".join(after) or "-",
            }
        )
    return rows
