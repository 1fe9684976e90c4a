"""Who sends to whom in a plan: the downstream instances a stage instance's result goes to,
and the inputs a stage instance waits for.

Both sides derive them from the same plan, so they agree:

* a start stage waits for one :data:`~fades.pipelines.protocol.TRIGGER` bundle;
* a scattered stage after a scattered stage planned on the same set of instances goes
  instance to instance (each node detects, then summarises its own detections);
* otherwise every instance of the upstream stage sends to every instance of the downstream
  stage (a gather: the downstream instance waits for one bundle per upstream instance).
"""

from __future__ import annotations

import re

from fades.pipelines.protocol import TRIGGER, Assignment, Plan
from fades.pipelines.spec import PipelineSpec

#: what the engine uses as a stage's run-context input name (``data["_pipeline"]``)
CONTEXT_INPUT = "_pipeline"
#: the input name under which a start stage sees its trigger's value (a reading)
TRIGGER_INPUT = "trigger"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def input_name(stage: str) -> str:
    """The name under which a downstream function sees ``stage``'s value (``data[name]``):
    the stage name with ``-`` as ``_`` (and a leading ``_`` if it starts with a digit)."""
    name = stage.replace("-", "_")
    return name if _IDENT.match(name) else f"_{name}"


def _same_instances(plan: Plan, a: str, b: str) -> bool:
    return {x.instance for x in plan.instances(a)} == {x.instance for x in plan.instances(b)}


def one_to_one(spec: PipelineSpec, plan: Plan, upstream: str, downstream: str) -> bool:
    """True if ``upstream``'s instances feed ``downstream``'s instance to instance."""
    up, down = spec.stage(upstream), spec.stage(downstream)
    return up.scatter and down.scatter and _same_instances(plan, upstream, downstream)


def targets(
    spec: PipelineSpec, plan: Plan, stage: str, instance: str, downstream: str
) -> list[Assignment]:
    """The instances of ``downstream`` that the result of (``stage``, ``instance``) goes to."""
    insts = plan.instances(downstream)
    if one_to_one(spec, plan, stage, downstream):
        return [a for a in insts if a.instance == instance]
    return insts


def expected(spec: PipelineSpec, plan: Plan, stage: str, instance: str) -> set[tuple[str, str]]:
    """The (from_stage, producer) pairs that (``stage``, ``instance``) waits for."""
    after = spec.stage(stage).after
    if not after:
        return {(TRIGGER, TRIGGER)}
    want: set[tuple[str, str]] = set()
    for up in after:
        if one_to_one(spec, plan, up, stage):
            want.add((up, instance))
        else:
            want.update((up, a.instance) for a in plan.instances(up))
    return want
