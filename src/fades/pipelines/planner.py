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

:func:`replan` applies each stage's ``failover`` when nodes go down (substitute, skip, wait)
and returns stages in skip/wait to their node when it is back; :func:`plan_rows` turns a plan
into table rows for the CLI and the HTTP API. Every assignment carries a one-line reason.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from fades.errors import NoPlacement, PipelineValidationError, Unplaceable
from fades.fabric.protocol import NodeInfo
from fades.pipelines.protocol import SINGLE, Assignment, Plan
from fades.pipelines.spec import PipelineSpec, StageSpec
from fades.placers import LocalityPlacer, Placer, describe_op
from fades.task import Credentials, Task

__all__ = ["plan_pipeline", "plan_rows", "replan"]


def _ops(stage: StageSpec) -> str:
    return ", ".join(describe_op(op).removeprefix("data op ") for op in stage.data)


def _task(spec: PipelineSpec, stage: StageSpec) -> Task:
    """The synthetic task a placer sees for a stage with data."""
    creds = Credentials(
        task_id=f"{spec.name}.{stage.name}"[:64], tenant=spec.tenant, priority=spec.priority
    )
    return Task(credentials=creds, data=stage.data, function=stage.function)


def _unplaceable(stage: StageSpec, exc: NoPlacement) -> Unplaceable:
    why = str(exc).removeprefix("cannot place task: ")
    why = why.replace("split it into one task per node", "split the stage, one per data op")
    return Unplaceable(
        f"cannot place stage {stage.name!r}: {why}", stage=stage.name, op=exc.context.get("op")
    )


class _Layout:
    """Assignments being built, with how many stages of the pipeline each node carries."""

    def __init__(self, spec: PipelineSpec, up: Sequence[NodeInfo]) -> None:
        self.spec = spec
        self.up = {n.name: n for n in up}
        self.by_stage: dict[str, list[Assignment]] = {}
        self.count: Counter[str] = Counter()

    def add(self, a: Assignment) -> None:
        self.by_stage.setdefault(a.stage, []).append(a)
        if a.mode == "run":
            self.count[a.node] += 1

    def load(self, name: str) -> float:
        n = self.up[name]
        return n.load.score + self.count[name] / max(1, n.load.capacity)

    def least_loaded(self, among: Sequence[str] | None = None) -> str:
        names = [n for n in (among if among is not None else self.up) if n in self.up]
        return min(names, key=lambda n: (self.load(n), n))

    def full(self, name: str) -> bool:
        return self.count[name] + 1 > max(1, self.up[name].load.capacity)

    def running(self, stage: str) -> list[Assignment]:
        return [a for a in self.by_stage.get(stage, []) if a.mode == "run" and a.node in self.up]

    def dataless(self, stage: StageSpec) -> tuple[str, str]:
        """Node and reason for a stage without data (see the module docstring)."""
        inputs = [a for u in stage.after for a in self.running(u)]
        nodes = sorted({a.node for a in inputs})
        if inputs and len(nodes) == 1:
            what = ", ".join(stage.after)
            node, why = nodes[0], f"co-located with {what} (no data; saves a hop)"
        else:
            node, why = "", ""
            for d in self.spec.downstream(stage.name):
                ds = self.spec.stage(d)
                placed = self.running(d)
                if ds.data and not ds.scatter and len(placed) == 1:
                    node = placed[0].node
                    why = f"next to {d}, which holds its data (no data; saves a hop)"
                    break
            if not node and nodes:
                node = self.least_loaded(nodes)
                why = (
                    f"fan-in of {len(inputs)} inputs: on the least loaded of their "
                    f"{len(nodes)} nodes (no data)"
                )
            elif not node:
                node = self.least_loaded()
                why = "no data: least loaded up node"
        if self.full(node):
            room = [n for n in self.up if n != node and not self.full(n)]
            if room:
                other = self.least_loaded(room)
                cap = self.up[node].load.capacity
                why = (
                    f"would be {why.split(' (')[0]}, but {node} is at its capacity "
                    f"({cap} stage(s) of this pipeline); moved to the least loaded {other}"
                )
                node = other
        return node, why


def _place_data(
    spec: PipelineSpec,
    stage: StageSpec,
    lay: _Layout,
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
        held = f"; holds {_ops(stage)}" if stage.data else ""
        return [Assignment(stage=stage.name, node=stage.node, reason=f"pinned to it{held}")]
    task = _task(spec, stage)
    if stage.scatter:
        from fades.placers.locality import holders

        try:
            found = sorted(holders(task, up, down), key=lambda n: n.name)
        except NoPlacement as exc:
            raise _unplaceable(stage, exc) from None
        return [
            Assignment(
                stage=stage.name,
                instance=n.name,
                node=n.name,
                reason=f"holds {_ops(stage)} (scattered: {i + 1} of {len(found)} holders)",
            )
            for i, n in enumerate(found)
        ]
    try:
        where = placer.place(task, up, down)
    except NoPlacement as exc:
        raise _unplaceable(stage, exc) from None
    extra = where.reason.split("; ", 1)[1] if "; " in where.reason else ""
    why = f"holds {_ops(stage)}" + (f"; {extra}" if extra else "")
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
    lay = _Layout(spec, up)
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


def _substitute(
    a: Assignment,
    spec: PipelineSpec,
    lay: _Layout,
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
        why = f"failover: {dead} down; substituted by {node}, which also holds {_ops(st)}"
        return a.model_copy(update={"node": node, "mode": "run", "home": None, "reason": why})
    try:
        where = placer.place(_task(spec, st), up, down)
    except NoPlacement:
        return None
    why = f"failover: {dead} down; substituted by {where.node}, which holds {_ops(st)}"
    return a.model_copy(update={"node": where.node, "mode": "run", "home": None, "reason": why})


def _skipper(a: Assignment, spec: PipelineSpec, lay: _Layout) -> str:
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
    lay = _Layout(spec, up)
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
    lay: _Layout,
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
