"""What one stage execution of the pipeline engine sees: its inputs gathered from upstream
(:func:`stage_inputs`), ``Skipped`` markers (:func:`skipped`) and whether its guard holds
(:func:`guard_reason`). Used by :class:`~fades.pipelines.engine.PipelineEngine`.
"""

from __future__ import annotations

from typing import Any

from fades.pipelines.collect import Gathering
from fades.pipelines.guard import compile_guard
from fades.pipelines.protocol import SINGLE, TRIGGER, Plan
from fades.pipelines.routing import TRIGGER_INPUT, input_name, one_to_one
from fades.pipelines.spec import PipelineSpec

SKIPPED = "__fades_skipped__"


def skipped(reason: str) -> dict[str, str]:
    return {SKIPPED: reason}


def stage_inputs(spec: PipelineSpec, plan: Plan, g: Gathering) -> dict[str, Any]:
    """What the stage of gathering ``g`` sees as ``data``: the trigger's value for a start
    stage, else one entry per upstream stage (a dict by producer after a scatter), missing
    and skipped inputs as ``Skipped``."""
    stage = g.key[2]
    st = spec.stage(stage)
    out: dict[str, Any] = {}
    if not st.after:
        trig = g.arrivals.get((TRIGGER, TRIGGER))
        if trig is not None and trig.value is not None:
            out[TRIGGER_INPUT] = trig.value
        return out
    for up in st.after:
        producers = sorted(p for (s, p) in g.expected if s == up)
        vals: dict[str, Any] = {}
        for prod in producers:
            a = g.arrivals.get((up, prod))
            if a is None:
                vals[prod] = skipped(f"no input from {up} ({prod}) within the gather timeout")
            elif a.bundle.skipped:
                vals[prod] = skipped(a.bundle.skipped)
            else:
                vals[prod] = a.value
        single = producers == [SINGLE] or one_to_one(spec, plan, up, stage)
        out[input_name(up)] = next(iter(vals.values())) if single and vals else vals
    return out


def guard_reason(expr: str, inputs: dict[str, Any]) -> str | None:
    """None if the guard holds on ``{upstream stage: value}``, else why the stage is skipped.

    Raises:
        ValueError: the guard cannot be evaluated; one line naming the guard once and why.
    """
    try:
        if compile_guard(expr).evaluate(inputs):
            return None
    except (ValueError, TypeError) as exc:
        why = str(exc).removeprefix(f"guard {expr!r}: ")
        raise ValueError(f"guard {expr!r} could not be evaluated: {why}") from None
    return f"guard {expr!r} is false"
