"""The node registry: registration, heartbeats, and down detection within ``down_after``."""

from __future__ import annotations

import time

import pytest

from fades.errors import NodeUnavailable

from .conftest import CORE_WASM, Bed, held

#: long enough that a loaded machine's scheduling hiccups (the heartbeat is 0.2 s) never mark
#: a live node down; the exact bound is checked on the controller's own clock below
DOWN_AFTER = 3.0
#: budget for waiting on an observable event (generous: a loaded 2-core machine)
WAIT_S = 60.0


def nodes(bed: Bed) -> dict[str, dict]:
    with bed.client() as c:
        return {n["name"]: n for n in c.nodes()}


def wait_for(cond, timeout: float = WAIT_S, step: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def test_a_node_registers_what_it_offers_and_its_heartbeats_are_seen(bed: Bed) -> None:
    bed.start_controller(down_after=DOWN_AFTER)
    bed.register("edge-a", [held("room1"), held("room1", "co2")])
    first = wait_for(lambda: nodes(bed).get("edge-a"))
    assert first["up"] and first["down_reason"] is None
    assert first["arch"] == "x86_64" and first["cores"] == 2 and first["memory_mib"] == 1024
    assert "fades-py/1" in first["runtimes"]
    assert {(d["location"], d["sensor_type"]) for d in first["data"]} == {
        ("room1", "temperature"),
        ("room1", "co2"),
    }
    later = wait_for(lambda: (n := nodes(bed)["edge-a"])["seq"] >= first["seq"] + 3 and n)
    assert later["up"] and later["heartbeat_age_s"] < DOWN_AFTER


def test_a_silent_node_is_marked_down_within_down_after_and_new_tasks_avoid_it(
    bed: Bed, make_task, signing_key
) -> None:
    from fades.functions.artifact import create

    bed.start_controller(down_after=DOWN_AFTER)
    a = bed.register("edge-a", [held("room1")])
    bed.register("edge-b", [held("room1")])
    wait_for(lambda: all(n["up"] for n in nodes(bed).values()) and len(nodes(bed)) == 2)
    with bed.client() as c:
        c.upload(create("core", "mean", CORE_WASM, key=signing_key).to_bytes())
        # both hold room1 and are idle: the tie goes to the first name
        assert c.submit(make_task("mean"))["node"] == "edge-a"

        bed.run(a.pause())
        silent_at = time.monotonic()
        down = wait_for(lambda: not nodes(bed)["edge-a"]["up"], timeout=DOWN_AFTER + WAIT_S)
        elapsed = time.monotonic() - silent_at
        assert down
        assert elapsed < DOWN_AFTER + WAIT_S, elapsed
        # the stated bound, on the controller's clock (no wall-clock race): up until
        # down_after after the last heartbeat seen, down from then on
        ctl = bed.controller
        assert ctl is not None
        entry = ctl.registry.get("edge-a")
        assert entry is not None
        assert ctl.registry.is_up("edge-a", entry.seen_at + DOWN_AFTER - 0.01)
        assert not ctl.registry.is_up("edge-a", entry.seen_at + DOWN_AFTER + 0.01)
        view = nodes(bed)["edge-a"]
        assert "no heartbeat for" in view["down_reason"]
        assert nodes(bed)["edge-b"]["up"]

        receipt = c.submit(make_task("mean"))
        assert receipt["node"] == "edge-b"
        with pytest.raises(NodeUnavailable, match=r"edge-a.*is down: no heartbeat"):
            c.submit(make_task("mean"), node="edge-a")


def test_a_node_that_stops_cleanly_is_down_at_once(bed: Bed) -> None:
    bed.start_controller(down_after=30.0)  # long: only the stopping flag can explain it
    a = bed.register("edge-a", [held("room1")])
    wait_for(lambda: nodes(bed).get("edge-a", {}).get("up"))
    bed.run(a.stop(clean=True))
    view = wait_for(lambda: (n := nodes(bed)["edge-a"])["up"] is False and n)
    assert view["down_reason"].startswith("stopped cleanly")  # not a missed heartbeat


def test_a_node_that_comes_back_is_up_again(bed: Bed) -> None:
    bed.start_controller(down_after=DOWN_AFTER)
    a = bed.register("edge-a", [held("room1")])
    wait_for(lambda: nodes(bed).get("edge-a", {}).get("up"))
    bed.run(a.pause())
    wait_for(lambda: not nodes(bed)["edge-a"]["up"], timeout=DOWN_AFTER + WAIT_S)
    bed.run(a.beat())
    assert wait_for(lambda: nodes(bed)["edge-a"]["up"])
