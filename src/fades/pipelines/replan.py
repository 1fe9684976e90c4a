"""Re-plans of a running pipeline: :func:`replan` applies each stage's ``failover`` when
nodes go down (substitute, skip, wait) and returns stages in skip/wait to their node when it
is back (see :mod:`fades.pipelines.planner` for the first plan).
"""

from __future__ import annotations

from collections.abc import Sequence

from fades.errors import NoPlacement
from fades.fabric.protocol import NodeInfo
from fades.pipelines.layout import Layout, stage_ops, stage_task
from fades.pipelines.protocol import SINGLE, Assignment, Plan
from fades.pipelines.spec import PipelineSpec
from fades.placers import LocalityPlacer, Placer

__all__ = ["replan"]


def _substitute(
    a: Assignment,
    spec: PipelineSpec,
    lay: Layout,
    up: Sequence[NodeInfo],
    down: Sequence[NodeInfo],
    placer: Placer,
) -> Assignment | None:
    """``a`` moved to another up node that can serve it, or None if there is none."""
    st = spec.stage(a.stage)
    dead = a.node
    if st.node is not None:
        return None  # pinned: only that node serves it
    if not st.data:
        node, why = lay.dataless(st)
        return a.model_copy(
            update={"node": node, "mode": "run", "home": None,
                    "reason": f"failover: {dead} down; substituted by {node} ({why})"}
        )  # fmt: skip
    if st.scatter:
        # another node must hold what the dead node's instance read (a replica of its data)
        gone = next((n for n in down if n.name == a.instance), None)
        if gone is None:
            return None
        held = {
            (d.connector, d.location, d.sensor_type) for op in st.data for d in gone.matching(op)
        }
        subs = [
            n.name
            for n in up
            if held
            and held <= {(d.connector, d.location, d.sensor_type) for d in n.data if d.rows > 0}
        ]
        if not subs:
            return None
        node = lay.least_loaded(subs)
        why = f"failover: {dead} down; substituted by {node}, which also holds {stage_ops(st)}"
        return a.model_copy(update={"node": node, "mode": "run", "home": None, "reason": why})
    try:
        where = placer.place(stage_task(spec, st), up, down)
    except NoPlacement:
        return None
    why = f"failover: {dead} down; substituted by {where.node}, which holds {stage_ops(st)}"
    return a.model_copy(update={"node": where.node, "mode": "run", "home": None, "reason": why})


def _skipper(a: Assignment, spec: PipelineSpec, lay: Layout) -> str:
    """The up node that passes ``Skipped`` on for ``a``: a downstream stage's, if any."""
    for d in spec.downstream(a.stage):
        for b in lay.running(d):
            return b.node
    for u in spec.stage(a.stage).after:
        for b in lay.running(u):
            return b.node
    return lay.least_loaded()


def replan(
    plan: Plan,
    spec: PipelineSpec,
    up: Sequence[NodeInfo],
    down: Sequence[NodeInfo],
    placer: Placer | None = None,
) -> Plan:
    """``plan`` after applying each stage's failover to the nodes not in ``up``, and
    returning skipped or waiting stages to their node when it is up again.

    Returns ``plan`` itself when nothing changed, else a copy with ``version + 1``.
    """
    placer = placer or LocalityPlacer()
    lay = Layout(spec, up)
    for a in plan.assignments:
        lay.add(a)
    out = list(plan.assignments)
    changed = False
    # substitutions first, so that a skipped stage can be passed on next to a substitute
    for second in (False, True):
        for i, a in enumerate(plan.assignments):
            new = _replan_one(a, spec, lay, up, down, placer)
            if (new.mode == "skip" and new is not a) != second:
                continue
            if new is not a:
                changed = True
                if a.mode == "run" and a.node in lay.up:
                    lay.count[a.node] -= 1
                lay.by_stage[a.stage] = [new if b is a else b for b in lay.by_stage[a.stage]]
                if new.mode == "run":
                    lay.count[new.node] += 1
            out[i] = new
    if not changed:
        return plan
    return plan.model_copy(update={"assignments": out, "version": plan.version + 1})


def _replan_one(
    a: Assignment,
    spec: PipelineSpec,
    lay: Layout,
    up: Sequence[NodeInfo],
    down: Sequence[NodeInfo],
    placer: Placer,
) -> Assignment:
    home = a.home or a.node
    if a.mode != "run" and home in lay.up:
        why = f"back on {home}, which is up again"
        return a.model_copy(update={"node": home, "mode": "run", "home": None, "reason": why})
    policy = spec.stage(a.stage).failover
    if a.mode != "run" and policy == "substitute" and lay.up:
        # a fallback (no holder was up): a node that can serve it may have come up since
        sub = _substitute(a.model_copy(update={"node": home}), spec, lay, up, down, placer)
        if sub is not None:
            return sub
    if a.mode == "wait" or (a.mode == "run" and a.node in lay.up):
        return a
    if a.mode == "skip":
        if a.node in lay.up:
            return a
        if not lay.up:
            return a
        node = _skipper(a, spec, lay)
        why = f"failover: {home} down; skipped (downstream gets Skipped), passed on by {node}"
        return a.model_copy(update={"node": node, "reason": why})
    dead = a.node
    fallback = ""
    if policy == "substitute" and lay.up:
        sub = _substitute(a, spec, lay, up, down, placer)
        if sub is not None:
            return sub
        policy = "skip" if a.instance != SINGLE else "wait"
        st = spec.stage(a.stage)
        fallback = (
            f"pinned to {st.node}; "
            if st.node
            else "no other up node holds its data; "
            if st.data
            else ""
        )
    if policy == "skip" and lay.up:
        node = _skipper(a, spec, lay)
        why = (
            f"failover: {dead} down; {fallback}skipped (downstream gets Skipped), "
            f"passed on by {node}"
        )
        return a.model_copy(update={"node": node, "mode": "skip", "home": dead, "reason": why})
    why = f"failover: {dead} down; {fallback}its bundles wait, durable, until it returns"
    return a.model_copy(update={"mode": "wait", "reason": why})
