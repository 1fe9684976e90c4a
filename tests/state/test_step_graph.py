"""The explicit step-graph helper: guarded transitions over a key-value state, one step per
invocation, captured after every step and resumed mid-job (natively and in the sandbox)."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace
from typing import Any

import pytest

from fades.broker.base import Dataset
from fades.functions.artifact import Artifact, create
from fades.functions.keys import SigningKey
from fades.guest.fades_capture import capture, restore
from fades.guest.fades_state import StepGraph, StepGraphError
from fades.sandbox import Limits, PythonSandbox
from fades.sandbox.wire import encode

JOB = """
from fades_state import StepGraph

graph = StepGraph(start="collect", kv={"n": 0, "total": 0.0, "reports": []})

@graph.step("collect")
def collect(kv, data, params):
    kv["n"] += 1
    kv["total"] += sum(data["t"].values)

@graph.step("report")
def report(kv, data, params):
    out = {"mean": kv["total"] / kv["n"]}
    kv["reports"].append(out["mean"])
    kv.update(n=0, total=0.0)
    return out

graph.transition("collect", "report", when=lambda kv: kv["n"] >= 3)
graph.transition("collect", "collect")
graph.transition("report", "collect")

def main(data, params):
    return graph.run(data, params)
"""


def test_guards_choose_the_next_step() -> None:
    ns: dict[str, Any] = {"__name__": "fades_function"}
    exec(JOB.replace("from fades_state", "from fades.guest.fades_state"), ns)
    ds = {"t": SimpleNamespace(values=[2.0])}  # what the function reads of a Dataset
    steps = [ns["main"](ds, {}) for _ in range(5)]
    assert [s["step"] for s in steps] == ["collect", "collect", "collect", "report", "collect"]
    assert steps[3]["output"] == {"mean": 2.0}
    text = capture(ns, 1 << 16)
    fresh: dict[str, Any] = {"__name__": "fades_function"}
    exec(JOB.replace("from fades_state", "from fades.guest.fades_state"), fresh)
    restore(fresh, text)
    g = fresh["graph"]
    assert (g.current, g.kv["n"], g.steps_run, g.kv["reports"]) == ("collect", 1, 5, [2.0])


def test_a_graph_without_a_way_out_says_so() -> None:
    g = StepGraph(start="a")
    g.step("a")(lambda kv, d, p: None)
    g.transition("a", "b")
    with pytest.raises(StepGraphError, match="no step 'b'"):
        g.run()
    g2 = StepGraph(start="a", kv={"x": 0})
    g2.step("a")(lambda kv, d, p: None)
    g2.step("b")(lambda kv, d, p: None)
    g2.transition("a", "b", when=lambda kv: kv["x"] > 0)
    with pytest.raises(StepGraphError, match="no transition out of step 'a'"):
        g2.run()
    g3 = StepGraph(start="only")
    g3.step("only")(lambda kv, d, p: 7)
    assert g3.run()["output"] == 7 and g3.run() == {"done": True, "steps": 1}


def test_a_step_graph_resumes_mid_job_in_the_sandbox(
    runtime_artifact: Artifact, signing_key: SigningKey
) -> None:
    fn = create("python", "job", textwrap.dedent(JOB).lstrip().encode(), key=signing_key)
    sb = PythonSandbox(runtime_artifact)
    blob = encode({"t": Dataset.from_records([1.0], [4.0], ["temperature"], ["r"], ["d"])})
    limits = Limits(32, 5000)
    with sb.open(fn, limits) as s:
        assert [s.invoke(blob).value["step"] for _ in range(2)] == ["collect", "collect"]
        state = s.snapshot()  # the job is interrupted after its 2nd step
    with sb.open(fn, limits) as s:
        s.restore(state)
        third, fourth = s.invoke(blob).value, s.invoke(blob).value
    assert third["step"] == "collect" and third["next"] == "report"
    assert fourth == {"step": "report", "output": {"mean": 4.0}, "next": "collect", "steps": 4}
