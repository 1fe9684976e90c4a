"""The locality placer's words: a draining holder is named with the way out, and an
inputs-only task is not said to have data holders."""

from __future__ import annotations

import time

import pytest

from fades.errors import NoPlacement
from fades.fabric.protocol import DataHeld, NodeInfo, NodeLoad
from fades.placers.locality import LocalityPlacer, draining_refusal
from fades.task import Task, parse_task


def node(name: str, *rooms: str) -> NodeInfo:
    now = time.time()
    held = [
        DataHeld(connector="sqlite", location=r, sensor_type="temperature", rows=10,
                 first_ts=now - 3600, last_ts=now)
        for r in rooms
    ]  # fmt: skip
    return NodeInfo(name=name, data=held, load=NodeLoad(capacity=1))


def task(room: str | None) -> Task:
    raw: dict[str, object] = {"credentials": {"tenant": "t"}, "function": {"artifact": "f"}}
    if room is None:
        raw["inputs"] = {"x": 1}
    else:
        raw["data"] = [{"name": "t", "select": {"location": room}}]
    return parse_task(raw)


def test_a_draining_holder_is_named_with_undrain() -> None:
    edge1, edge2 = node("edge1", "room1"), node("edge2", "room3")
    t = task("room1")
    with pytest.raises(NoPlacement) as err:
        LocalityPlacer().place(t, [edge2])  # edge1 is draining: not offered
    assert "no node holds it" in str(err.value)
    better = draining_refusal(t, err.value, [edge1])
    assert "node(s) edge1 could run its data" in str(better)
    assert "'fades nodes undrain edge1'" in str(better)
    assert better.context["draining"] == ["edge1"] and better.context["op"] == "t"
    # a draining node that does not hold the data changes nothing
    assert draining_refusal(t, err.value, [edge2]) is err.value


def test_every_node_draining_for_an_inputs_only_task() -> None:
    t = task(None)
    with pytest.raises(NoPlacement) as err:
        LocalityPlacer().place(t, [])
    better = draining_refusal(t, err.value, [node("edge1"), node("edge2")])
    assert "node(s) edge1, edge2 could run it but are being drained" in str(better)


def test_an_inputs_only_task_is_placed_on_the_least_loaded_of_the_nodes() -> None:
    p = LocalityPlacer().place(task(None), [node("a", "room1"), node("b")])
    assert "least loaded of 2 nodes" in p.reason and "holders" not in p.reason
    held = LocalityPlacer().place(task("room1"), [node("a", "room1"), node("b", "room1")])
    assert "least loaded of 2 holders" in held.reason
