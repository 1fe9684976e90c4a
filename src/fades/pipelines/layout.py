"""The pipeline planner's working state: :class:`Layout` (the assignments being built and
how many stages each node carries, and where a stage without data goes), and the synthetic
task a placer sees for a stage with data. Shared by :mod:`fades.pipelines.planner` and
:mod:`fades.pipelines.replan`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from fades.errors import NoPlacement, Unplaceable
from fades.fabric.protocol import NodeInfo
from fades.pipelines.protocol import Assignment
from fades.pipelines.spec import PipelineSpec, StageSpec
from fades.placers import describe_op
from fades.task import Credentials, Task


def stage_ops(stage: StageSpec) -> str:
    return ", ".join(describe_op(op).removeprefix("data op ") for op in stage.data)


def stage_task(spec: PipelineSpec, stage: StageSpec) -> Task:
    """The synthetic task a placer sees for a stage with data."""
    creds = Credentials(
        task_id=f"{spec.name}.{stage.name}"[:64], tenant=spec.tenant, priority=spec.priority
    )
    return Task(credentials=creds, data=stage.data, function=stage.function)


def unplaceable(stage: StageSpec, exc: NoPlacement) -> Unplaceable:
    why = str(exc).removeprefix("cannot place task: ")
    why = why.replace("split it into one task per node", "split the stage, one per data op")
    return Unplaceable(
        f"cannot place stage {stage.name!r}: {why}", stage=stage.name, op=exc.context.get("op")
    )


class Layout:
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
