"""A task is placed only on a node that holds ALL the locations and sensor types it selects.

Found in a fresh-clone trial: under ``fades up --nodes 2`` (edge1: room1, room2; edge2:
room3, room4) a task selecting ``location: [room1, room3]`` was placed on edge1 and came back
``done`` with room1 only, room3 silently missing. A scattered pipeline stage still runs on
every node that holds part of its data (each instance serves its own part).
"""

from __future__ import annotations

import time

import pytest

from fades.errors import NoPlacement
from fades.fabric.protocol import DataHeld, NodeInfo, NodeLoad
from fades.placers import NimbusPlacer
from fades.placers.locality import LocalityPlacer, covers, draining_refusal, holders
from fades.task import Task, parse_task


def node(name: str, *held: tuple[str, str], running: int = 0) -> NodeInfo:
    now = time.time()
    data = [
        DataHeld(connector="sqlite", location=loc, sensor_type=st, rows=10,
                 first_ts=now - 3600, last_ts=now)
        for loc, st in held
    ]  # fmt: skip
    return NodeInfo(name=name, data=data, load=NodeLoad(running=running, capacity=1))


def rooms(*names: str) -> list[tuple[str, str]]:
    return [(r, "temperature") for r in names]


def task(select: dict[str, object]) -> Task:
    return parse_task(
        {
            "credentials": {"tenant": "t"},
            "data": [{"name": "readings", "select": select}],
            "function": {"artifact": "f"},
        }
    )


EDGE1 = node("edge1", *rooms("room1", "room2"))
EDGE2 = node("edge2", *rooms("room3", "room4"))


def test_a_selection_spread_over_two_nodes_is_refused_naming_what_each_lacks() -> None:
    t = task({"location": ["room1", "room3"], "sensor_type": "temperature"})
    with pytest.raises(NoPlacement) as err:
        LocalityPlacer().place(t, [EDGE1, EDGE2])
    msg = str(err.value)
    assert "edge1 lacks location room3" in msg and "edge2 lacks location room1" in msg
    assert "split it into one task per node" in msg and err.value.context["op"] == "readings"
    with pytest.raises(NoPlacement, match="edge1 lacks location room3"):
        NimbusPlacer().place(t, [EDGE1, EDGE2])


def test_a_node_holding_every_selected_room_and_type_still_wins() -> None:
    t = task({"location": ["room1", "room2"], "sensor_type": "temperature"})
    assert LocalityPlacer().place(t, [EDGE1, EDGE2]).node == "edge1"
    # a busier node that holds all of it beats an idle one holding only part
    part = node("idle", ("room1", "temperature"))
    whole = node("busy", ("room1", "temperature"), ("room1", "co2"), running=3)
    both = task({"location": "room1", "sensor_type": ["temperature", "co2"]})
    assert covers(whole, both.data[0]) and not covers(part, both.data[0])
    assert LocalityPlacer().place(both, [part, whole]).node == "busy"


def test_a_name_no_node_holds_is_named() -> None:
    t = task({"location": ["room1", "room9"]})
    with pytest.raises(NoPlacement, match="edge1 lacks location room9"):
        LocalityPlacer().place(t, [EDGE1, EDGE2])


def test_a_down_node_holding_all_of_it_is_named() -> None:
    t = task({"location": ["room3", "room4"]})
    half = node("half", *rooms("room3"))
    with pytest.raises(NoPlacement, match=r"node\(s\) edge2 hold it but are down"):
        LocalityPlacer().place(t, [EDGE1, half], [EDGE2])
    # and a draining node that holds only part is not offered as the way out
    t2 = task({"location": ["room1", "room3"]})
    with pytest.raises(NoPlacement) as err:
        LocalityPlacer().place(t2, [EDGE2])
    assert draining_refusal(t2, err.value, [EDGE1]) is err.value


def test_a_scattered_stage_still_runs_on_every_partial_holder() -> None:
    t = task({"location": ["room1", "room3"]})
    assert [n.name for n in holders(t, [EDGE1, EDGE2], partial=True)] == ["edge1", "edge2"]


def test_a_task_is_not_queued_for_a_down_node_that_holds_only_part_of_it() -> None:
    """edge2 (a site's node) is down: room1+room3 must not wait for it, it lacks room1."""
    from typing import Any, cast

    from fades.controller.offline import place_offline
    from fades.controller.registry import NodeEntry, Registry

    registry = Registry(cast(Any, None))
    now = time.time()
    down = node("edge2", *rooms("room3", "room4")).model_copy(update={"site": "edge2"})
    registry.nodes = {"edge1": NodeEntry(EDGE1, now), "edge2": NodeEntry(down, now - 3600)}
    refused = NoPlacement("refused by the placer")
    with pytest.raises(NoPlacement, match="refused by the placer"):
        place_offline(registry, task({"location": ["room1", "room3"]}), None, refused)
    # a down node that holds all of it is still waited for
    queued = place_offline(registry, task({"location": ["room3", "room4"]}), None, refused)
    assert queued.node == "edge2"


def test_a_stateful_task_is_not_migrated_to_a_node_that_holds_only_part_of_its_data() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from fades.controller.migrate import check_holds
    from fades.controller.registry import NodeEntry
    from fades.errors import MigrationFailed

    half = node("half", *rooms("room1"))
    nodes = {"half": NodeEntry(half, time.time()), "edge1": NodeEntry(EDGE1, time.time())}
    ctl = cast(Any, SimpleNamespace(registry=SimpleNamespace(get=nodes.get)))
    raw = task({"location": ["room1", "room2"]}).model_dump(mode="json", exclude_none=True)
    with pytest.raises(MigrationFailed, match=r"node 'half' does not hold .*lacks location room2"):
        check_holds(ctl, "half", raw)
    check_holds(ctl, "edge1", raw)  # holds both rooms: fine
