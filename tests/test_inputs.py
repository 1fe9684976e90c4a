"""Tasks that carry their input inline: validated, bounded, and seen by the function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fades.errors import TaskValidationError
from fades.guest.fades_sdk import SKIPPED_KEY, Skipped, decode
from fades.sandbox.wire import encode
from fades.task import MAX_INPUT_BYTES, parse_task

FN = """
def main(data, params):
    frame = data["frame"]
    up = data["up"]
    return {"n": len(frame), "sum": sum(frame), "up": bool(up), "why": getattr(up, "reason", None),
            "has_t": "t" in data}
"""


def _task(**kw: Any) -> dict[str, Any]:
    return {"credentials": {"tenant": "a"}, "function": {"artifact": "f"}, **kw}


def test_a_task_with_inputs_only_runs_in_the_sandbox_and_sees_them(
    make_node: Callable[..., Any],
) -> None:
    node = make_node(functions={"f": FN}, readings=False)
    inputs = {"frame": [1.0, 2.0, 4.0], "up": {SKIPPED_KEY: "node n2 is down"}}
    rec = node.orchestrator.run(_task(inputs=inputs), timeout=120)
    assert rec.status == "done", rec.error
    assert rec.result == {"n": 3, "sum": 7.0, "up": False, "why": "node n2 is down", "has_t": False}


def test_inputs_and_datasets_side_by_side(
    make_node: Callable[..., Any], make_task: Callable[..., dict[str, Any]]
) -> None:
    fn = "def main(data, params):\n    return [len(data['t']) > 0, data['k']]\n"
    node = make_node(functions={"g": fn})
    task = make_task("g")
    task["inputs"] = {"k": "v"}
    rec = node.orchestrator.run(task, timeout=120)
    assert rec.status == "done", rec.error
    assert rec.result == [True, "v"]


def test_wire_round_trip_turns_the_skip_marker_into_a_falsy_skipped() -> None:
    data, params = decode(encode({}, {"p": 1}, {"x": {SKIPPED_KEY: "why"}, "y": [1]}))
    assert isinstance(data["x"], Skipped) and not data["x"] and data["x"].reason == "why"
    assert data["y"] == [1] and params == {"p": 1}


@pytest.mark.parametrize(
    ("task", "field"),
    [
        (_task(), "a task needs at least one data operation"),
        (_task(inputs={}), "inline 'inputs'"),
        (_task(inputs={"bad name": 1}), "Python-style identifier"),
        (_task(inputs={"x": "a" * (MAX_INPUT_BYTES + 1)}), f"at most {MAX_INPUT_BYTES:,}"),
        (_task(inputs={"t": 1}, data=[{"name": "t"}]), "both a data operation and an input"),
        (_task(inputs={"x": float("nan")}), "inputs"),
    ],
)
def test_bad_inputs_are_refused_naming_the_problem(task: dict[str, Any], field: str) -> None:
    with pytest.raises(TaskValidationError) as err:
        parse_task(task)
    assert field in str(err.value)
