"""Placers: data locality (the default) and Nimbus scoring, as pure rules, then through the
controller over HTTP."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from fades.errors import NoPlacement
from fades.fabric.protocol import DataHeld, NodeInfo, NodeLoad
from fades.functions.artifact import create
from fades.placers import LocalityPlacer, NimbusPlacer, Placement, placer
from fades.task import Task, parse_task

from .conftest import CORE_WASM, Bed, held


def place(t: Task, up: Sequence[NodeInfo], down: Sequence[NodeInfo] = ()) -> Placement:
    return LocalityPlacer().place(t, up, down)


def node(name: str, *rooms: str, running: int = 0, capacity: int = 1, **kw: Any) -> NodeInfo:
    data: list[DataHeld] = [held(r) for r in rooms]
    return NodeInfo(name=name, data=data, load=NodeLoad(running=running, capacity=capacity), **kw)


def task(*rooms: str, make_task: Any) -> Any:
    data = [{"name": f"d{i}", "select": {"location": r}} for i, r in enumerate(rooms)]
    return parse_task(make_task("f", data=data))


def test_the_task_goes_to_the_node_holding_its_room(make_task: Any) -> None:
    nodes = [node("a", "room1", "room2"), node("b", "room3")]
    assert place(task("room3", make_task=make_task), nodes).node == "b"
    p = place(task("room1", make_task=make_task), nodes)
    assert p.node == "a" and "data locality" in p.reason and "'d0'" in p.reason


def test_among_several_holders_the_least_loaded_wins_and_ties_go_by_name(make_task: Any) -> None:
    t = task("room1", make_task=make_task)
    busy, idle = node("a", "room1", running=2), node("c", "room1", running=0)
    half = node("b", "room1", running=1, capacity=2)
    p = place(t, [busy, half, idle])
    assert p.node == "c" and "least loaded of 3" in p.reason
    assert place(t, [node("z", "room1"), node("m", "room1")]).node == "m"


def test_a_node_must_hold_every_data_op(make_task: Any) -> None:
    nodes = [node("a", "room1"), node("b", "room1", "room2", running=5)]
    assert place(task("room1", "room2", make_task=make_task), nodes).node == "b"
    with pytest.raises(NoPlacement, match=r"no single node holds all.*'d0' on a, b.*'d1' on c"):
        place(task("room1", "room3", make_task=make_task), [*nodes, node("c", "room3")])


def test_data_outside_the_selected_window_does_not_count(make_task: Any) -> None:
    old = DataHeld(
        connector="sqlite",
        location="room1",
        sensor_type="temperature",
        rows=10,
        first_ts=time.time() - 7200,
        last_ts=time.time() - 3600,
    )
    t = parse_task(
        make_task("f", data=[{"name": "t", "select": {"location": "room1", "last_seconds": 60}}])
    )
    with pytest.raises(NoPlacement, match="no node holds it"):
        place(t, [NodeInfo(name="a", data=[old])])
    empty = DataHeld(connector="sqlite", location="room1", sensor_type="temperature", rows=0)
    with pytest.raises(NoPlacement):
        place(t, [NodeInfo(name="a", data=[empty])])


def test_a_refusal_names_the_op_its_selector_and_a_down_holder(make_task: Any) -> None:
    t = task("room9", make_task=make_task)
    with pytest.raises(NoPlacement) as err:
        place(t, [node("a", "room1")], down=[node("b", "room9")])
    msg = str(err.value)
    assert "'d0'" in msg and "location=room9" in msg and "b hold it but are down" in msg
    assert err.value.context["op"] == "d0"
    with pytest.raises(NoPlacement, match="no node is up"):
        place(t, [])


def test_nimbus_scores_only_the_data_holders_by_predicted_latency_and_load(
    make_task: Any,
) -> None:
    t = task("room1", make_task=make_task)
    nimbus = NimbusPlacer(eps_t_ms=500.0)
    # far holds no room1: never chosen, however close
    near = node("near", "room1", labels={"rtt_ms": "5"})
    far = node("far", "room1", labels={"rtt_ms": "300"})
    other = node("other", "room2", labels={"rtt_ms": "0"})
    p = nimbus.place(t, [far, near, other])
    assert p.node == "near" and "nimbus: node near" in p.reason and "data locality" in p.reason
    # a busy near node loses to an idle one a little further away (queue + load terms)
    busy = node("near", "room1", running=4, capacity=1, labels={"rtt_ms": "5"})
    idle = node("mid", "room1", labels={"rtt_ms": "40"})
    assert nimbus.place(t, [busy, idle]).node == "mid"
    # locality alone ignores RTT: the least loaded holder wins, ties by name
    assert place(t, [far, near]).node == "far"
    # none under eps_t: the best still wins, and the reason says so
    slow = NimbusPlacer(eps_t_ms=1.0).place(t, [far, near])
    assert slow.node == "near" and "no offloading site within budget" in slow.reason
    # the same refusals as locality
    with pytest.raises(NoPlacement, match="b hold it but are down"):
        nimbus.place(task("room9", make_task=make_task), [near], down=[node("b", "room9")])


def test_placers_by_name() -> None:
    assert placer("locality").name == "locality" and placer("nimbus").name == "nimbus"
    with pytest.raises(ValueError, match="unknown placer 'moon'; expected one of locality, nimbus"):
        placer("moon")
    with pytest.raises(ValueError, match="eps_t_ms"):
        NimbusPlacer(eps_t_ms=float("nan"))


def test_auto_placement_over_http(bed: Bed, make_task: Any, signing_key: Any) -> None:
    bed.start_controller()
    bed.register("north", [held("room1"), held("room2")], load=NodeLoad(running=1))
    bed.register("south", [held("room3")])
    bed.register("spare", [held("room1")], load=NodeLoad(running=0))
    with bed.client() as c:
        deadline = time.monotonic() + 30
        while len([n for n in c.nodes() if n["up"]]) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())

        def submit(room: str) -> dict[str, Any]:
            return c.submit(make_task("f", data=[{"name": "t", "select": {"location": room}}]))

        assert submit("room3")["node"] == "south"
        assert submit("room2")["node"] == "north"
        r = submit("room1")  # north and spare hold it; spare is idle
        assert r["node"] == "spare" and "least loaded of 2" in r["placement"]
        assert c.get(r["task_id"])["placement"] == r["placement"]
        with pytest.raises(NoPlacement) as err:
            submit("room9")
        assert "'t'" in str(err.value) and "room9" in str(err.value)

        # the status code itself
        resp = c._http.post(
            "/v1/tasks",
            json=make_task("f", data=[{"name": "t", "select": {"location": "room9"}}]),
        )
        assert resp.status_code == 422 and resp.json()["error_kind"] == "NoPlacement"
    # placed tasks really went to the chosen node's subject
    sent = {r.name: len(bed.run(r.dispatched())) for r in bed.registrations}
    assert sent == {"north": 1, "south": 1, "spare": 1}


def test_the_controller_places_with_the_placer_it_was_given(
    bed: Bed, make_task: Any, signing_key: Any
) -> None:
    bed.start_controller(placer="nimbus")
    bed.register("close", [held("room1")], load=NodeLoad(running=1, capacity=4))
    bed.register("idle", [held("room1")])
    with bed.client() as c:
        deadline = time.monotonic() + 30
        while len([n for n in c.nodes() if n["up"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        r = c.submit(make_task("f", data=[{"name": "t", "select": {"location": "room1"}}]))
    assert r["node"] == "idle" and "nimbus: node idle" in r["placement"]
