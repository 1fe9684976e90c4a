"""The planner: scatter, locality, co-location, fan-in, capacity, pins, and failover re-plans."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fades.errors import NoPlacement, PipelineError, PipelineValidationError, Unplaceable
from fades.fabric.protocol import DataHeld, NodeInfo, NodeLoad
from fades.pipelines.planner import plan_pipeline, plan_rows, replan
from fades.pipelines.protocol import SINGLE, Plan
from fades.pipelines.spec import PipelineSpec, parse_pipeline
from fades.placers import NimbusPlacer

NOW = 1_800_000_000.0


def node(
    name: str,
    *held: tuple[str, str],
    capacity: int = 8,
    running: int = 0,
) -> NodeInfo:
    """A node holding (location, sensor_type) readings up to now."""
    t = time.time()
    return NodeInfo(
        name=name,
        data=[
            DataHeld(
                connector="sqlite",
                location=loc,
                sensor_type=st,
                rows=100,
                first_ts=t - 3600,
                last_ts=t,
            )
            for loc, st in held
        ],
        load=NodeLoad(running=running, capacity=capacity),
    )


def fn(name: str) -> dict[str, Any]:
    return {"artifact": name}


def pipeline(*stages: dict[str, Any], **top: Any) -> PipelineSpec:
    """A spec of ``stages``; a single stage gets a data-less ``sink`` after it."""
    listed = list(stages)
    if len(listed) == 1:
        listed.append({"name": "sink", "after": [listed[0]["name"]], "function": fn("sink")})
    return parse_pipeline(
        {"name": "p", "credentials": {"tenant": "t", "priority": 7}, "stages": listed, **top}
    )


def sel(sensor_type: str, **more: Any) -> list[dict[str, Any]]:
    return [{"name": "d", "select": {"sensor_type": sensor_type, **more}}]


ROAD = pipeline(
    {"name": "detect", "function": fn("det"), "data": sel("surface_temp", last_seconds=60),
     "scatter": True},
    {"name": "fuse", "after": ["detect"], "function": fn("fuse"), "gather": {"timeout_s": 2}},
    {"name": "warn", "after": ["fuse"], "function": fn("warn"), "when": "ice",
     "failover": "skip"},
)  # fmt: skip


def lamps(**load: int) -> list[NodeInfo]:
    return [
        node(f"lamp{i}", (f"road-{i}", "surface_temp"), ("road", "air_temp"),
             running=load.get(f"lamp{i}", 0))
        for i in (1, 2, 3)
    ]  # fmt: skip


def where(plan: Plan) -> dict[tuple[str, str], tuple[str, str]]:
    return {(a.stage, a.instance): (a.node, a.mode) for a in plan.assignments}


def test_scatter_runs_one_instance_on_each_holder() -> None:
    up = [*lamps(), node("gateway")]
    plan = plan_pipeline(ROAD, up, now=NOW)
    det = plan.instances("detect")
    assert [(a.instance, a.node) for a in det] == [(f"lamp{i}", f"lamp{i}") for i in (1, 2, 3)]
    assert all("holds 'd' (sqlite: sensor_type=surface_temp" in a.reason for a in det)
    assert "scattered: 2 of 3 holders" in det[1].reason
    assert plan.pipeline == "p" and plan.tenant == "t" and plan.version == 1
    assert plan.submitted_at == NOW and plan.ends_at is None
    assert PipelineSpec.model_validate(plan.spec) == ROAD
    assert Plan.decode(plan.encode()) == plan  # travels on the Bus


def test_fan_in_after_a_scatter_goes_to_the_least_loaded_input_node() -> None:
    plan = plan_pipeline(ROAD, [*lamps(lamp1=3, lamp2=1, lamp3=2), node("gateway")], now=NOW)
    (fuse,) = plan.instances("fuse")
    assert fuse.node == "lamp2" and fuse.instance == SINGLE
    assert "fan-in of 3 inputs" in fuse.reason
    (warn,) = plan.instances("warn")
    assert warn.node == "lamp2"
    assert warn.reason == "co-located with fuse (no data; saves a hop)"


def test_fan_in_goes_next_to_the_downstream_that_holds_data() -> None:
    spec = pipeline(
        {"name": "a", "function": fn("a"), "data": sel("co2"), "scatter": True},
        {"name": "join", "after": ["a"], "function": fn("j")},
        {"name": "act", "after": ["join"], "function": fn("x"), "data": sel("valve")},
    )
    up = [node("n1", ("r1", "co2")), node("n2", ("r2", "co2")), node("hub", ("plant", "valve"))]
    plan = plan_pipeline(spec, up, now=NOW)
    assert where(plan)[("join", SINGLE)] == ("hub", "run")
    assert "next to act, which holds its data" in plan.instances("join")[0].reason
    assert where(plan)[("act", SINGLE)] == ("hub", "run")


def test_a_chain_stays_on_the_node_of_its_data() -> None:
    spec = pipeline(
        {"name": "a", "function": fn("a"), "data": sel("co2")},
        {"name": "b", "after": ["a"], "function": fn("b")},
        {"name": "c", "after": ["b"], "function": fn("c")},
        {"name": "d", "after": ["b"], "function": fn("d")},  # fan-out
    )
    up = [node("n1"), node("n2", ("r", "co2")), node("n3")]
    plan = plan_pipeline(spec, up, now=NOW)
    assert {a.stage: a.node for a in plan.assignments} == {
        "a": "n2", "b": "n2", "c": "n2", "d": "n2"
    }  # fmt: skip
    assert plan.instances("a")[0].reason.startswith("holds 'd' (sqlite: sensor_type=co2)")
    assert plan.instances("c")[0].reason == "co-located with b (no data; saves a hop)"


def test_a_data_stage_goes_through_the_placer_and_mentions_other_holders() -> None:
    spec = pipeline({"name": "a", "function": fn("a"), "data": sel("co2")})
    up = [node("n1", ("r", "co2"), running=4), node("n2", ("r", "co2"))]
    (a,) = plan_pipeline(spec, up, now=NOW).instances("a")
    assert a.node == "n2"
    assert "least loaded of 2 holders" in a.reason and "1 other node(s)" in a.reason
    nimbus = plan_pipeline(spec, up, placer=NimbusPlacer(), now=NOW).instances("a")[0]
    assert "nimbus" in nimbus.reason


def test_capacity_spills_a_dataless_stage_to_the_least_loaded_other_node() -> None:
    spec = pipeline(
        {"name": "a", "function": fn("a"), "data": sel("co2")},
        {"name": "b", "after": ["a"], "function": fn("b")},
        {"name": "c", "after": ["b"], "function": fn("c")},
    )
    up = [node("n1", ("r", "co2"), capacity=2), node("n2", running=1), node("n3")]
    plan = plan_pipeline(spec, up, now=NOW)
    assert {a.stage: a.node for a in plan.assignments} == {"a": "n1", "b": "n1", "c": "n3"}
    (c,) = plan.instances("c")
    assert "n1 is at its capacity (2 stage(s) of this pipeline)" in c.reason
    assert "moved to the least loaded n3" in c.reason


def test_pinned_stages() -> None:
    spec = pipeline(
        {"name": "a", "function": fn("a"), "data": sel("co2")},
        {"name": "b", "after": ["a"], "function": fn("b"), "node": "n3"},
    )
    up = [node("n1", ("r", "co2")), node("n3")]
    plan = plan_pipeline(spec, up, now=NOW)
    assert where(plan)[("b", SINGLE)] == ("n3", "run")
    assert plan.instances("b")[0].reason == "pinned to it"
    with pytest.raises(Unplaceable, match="'b': it is pinned to node 'n3', which is down") as e:
        plan_pipeline(spec, up[:1], [node("n3")], now=NOW)
    assert e.value.context["stage"] == "b"
    with pytest.raises(Unplaceable, match="which is not a known node"):
        plan_pipeline(spec, up[:1], now=NOW)
    held = pipeline({"name": "a", "function": fn("a"), "data": sel("co2"), "node": "n3"})
    with pytest.raises(Unplaceable, match=r"'n3', which does not hold data op 'd'"):
        plan_pipeline(held, up, now=NOW)


def test_unplaceable_stages_are_named_with_their_data_and_down_holders() -> None:
    with pytest.raises(Unplaceable) as info:
        plan_pipeline(ROAD, [node("gateway")], [lamps()[1]], now=NOW)
    err = info.value
    assert isinstance(err, NoPlacement) and isinstance(err, PipelineError)
    assert err.context == {"stage": "detect", "op": "d"}
    assert "cannot place stage 'detect'" in str(err)
    assert "data op 'd' (sqlite: sensor_type=surface_temp" in str(err)
    assert "lamp2 hold it but are down" in str(err)
    single = pipeline({"name": "x", "function": fn("a"), "data": sel("co2")})
    with pytest.raises(Unplaceable, match=r"cannot place stage 'x'.*no node holds it"):
        plan_pipeline(single, [node("n1")], now=NOW)
    with pytest.raises(Unplaceable, match="no node is up"):
        plan_pipeline(pipeline({"name": "y", "function": fn("a")}), [], now=NOW)
    two = pipeline(
        {"name": "z", "function": fn("a"), "scatter": True,
         "data": [{"name": "a", "select": {"sensor_type": "co2"}},
                  {"name": "b", "select": {"sensor_type": "valve"}}]},
    )  # fmt: skip
    with pytest.raises(Unplaceable, match=r"no single node holds all its data.*split the stage"):
        plan_pipeline(two, [node("n1", ("r", "co2")), node("n2", ("r", "valve"))], now=NOW)
    # the planner keeps working after a refusal
    assert plan_pipeline(ROAD, lamps(), now=NOW).instances("detect")


def test_ends_at() -> None:
    spec = pipeline({"name": "a", "function": fn("a")}, run={"mode": "automatic", "every_s": 5,
                                                            "for_s": 60})  # fmt: skip
    assert plan_pipeline(spec, [node("n1")], now=NOW).ends_at == NOW + 60
    until = datetime.now(UTC) + timedelta(hours=1)
    spec = pipeline({"name": "a", "function": fn("a")}, run={"until": until.isoformat()})
    assert plan_pipeline(spec, [node("n1")], now=time.time()).ends_at == until.timestamp()
    with pytest.raises(PipelineValidationError, match="already past"):
        plan_pipeline(spec, [node("n1")], now=until.timestamp() + 1)


def test_plan_rows() -> None:
    plan = plan_pipeline(ROAD, lamps(), now=NOW)
    rows = plan_rows(plan, ROAD)
    assert [r["stage"] for r in rows] == ["detect"] * 3 + ["fuse", "warn"]
    assert rows[0] == {
        "stage": "detect", "role": "start", "instance": "lamp1", "node": "lamp1",
        "mode": "run", "reason": plan.assignments[0].reason, "after": "-",
    }  # fmt: skip
    assert rows[3]["role"] == "midsection" and rows[3]["after"] == "detect"
    assert rows[4]["role"] == "finale" and rows[4]["after"] == "fuse"
    assert all(set(r) == {"stage", "role", "instance", "node", "mode", "reason", "after"}
               for r in rows)  # fmt: skip


# --- failover --------------------------------------------------------------------------------


def test_replan_without_change_returns_the_same_plan() -> None:
    up = lamps()
    plan = plan_pipeline(ROAD, up, now=NOW)
    assert replan(plan, ROAD, up, []) is plan


def test_substitute_a_dataless_stage_and_skip_a_scattered_instance_without_replica() -> None:
    up = lamps(lamp1=3, lamp2=1, lamp3=2)
    plan = plan_pipeline(ROAD, up, now=NOW)
    assert where(plan)[("fuse", SINGLE)] == ("lamp2", "run")
    dead = [n for n in up if n.name == "lamp2"]
    alive = [n for n in up if n.name != "lamp2"]
    new = replan(plan, ROAD, alive, dead)
    assert new is not plan and new.version == 2 and plan.version == 1
    got = where(new)
    # detect@lamp2 read lamp2's own road data: nobody else holds it -> skipped, from a node
    # that runs a downstream stage
    assert got[("detect", "lamp2")][1] == "skip"
    det2 = next(a for a in new.assignments if a.instance == "lamp2")
    assert det2.node in ("lamp1", "lamp3") and det2.home == "lamp2"
    assert "failover: lamp2 down; no other up node holds its data; skipped" in det2.reason
    # fuse (no data, substitute) moves to an up node; warn (skip) is skipped next to fuse
    fuse = new.instances("fuse")[0]
    assert fuse.mode == "run" and fuse.node in ("lamp1", "lamp3")
    assert fuse.reason.startswith(f"failover: lamp2 down; substituted by {fuse.node}")
    warn = new.instances("warn")[0]
    assert warn.mode == "skip" and warn.node == fuse.node and warn.home == "lamp2"
    assert "skipped (downstream gets Skipped)" in warn.reason
    # replanning again with the same view changes nothing
    assert replan(new, ROAD, alive, dead) is new

    # lamp2 returns: skipped stages go home in mode run; the substitute stays
    back = replan(new, ROAD, up, [])
    assert back.version == 3
    assert where(back)[("detect", "lamp2")] == ("lamp2", "run")
    assert where(back)[("warn", SINGLE)] == ("lamp2", "run")
    assert back.instances("warn")[0].reason == "back on lamp2, which is up again"
    assert back.instances("warn")[0].home is None
    assert where(back)[("fuse", SINGLE)] == (fuse.node, "run")


def test_substitute_a_data_stage_onto_a_replica_holder() -> None:
    spec = pipeline(
        {"name": "a", "function": fn("a"), "data": sel("co2")},
        {"name": "s", "function": fn("s"), "data": sel("temp"), "scatter": True},
        {"name": "join", "after": ["a", "s"], "function": fn("j")},
    )
    n1 = node("n1", ("r", "co2"), ("r1", "temp"))
    n2 = node("n2", ("r", "co2"), ("r1", "temp"), running=5)
    n3 = node("n3", ("r3", "temp"))
    plan = plan_pipeline(spec, [n1, n2, n3], now=NOW)
    assert where(plan)[("a", SINGLE)] == ("n1", "run")
    new = replan(plan, spec, [n2, n3], [n1])
    a = new.instances("a")[0]
    assert (a.node, a.mode) == ("n2", "run")
    assert (
        a.reason
        == "failover: n1 down; substituted by n2, which holds 'd' (sqlite: sensor_type=co2)"
    )
    # the scattered instance of n1 read location r1, which n2 also holds: n2 takes it over
    s1 = next(x for x in new.instances("s") if x.instance == "n1")
    assert (s1.node, s1.mode) == ("n2", "run")
    assert "substituted by n2, which also holds" in s1.reason


def test_wait_keeps_the_node_and_resumes_when_it_returns() -> None:
    spec = pipeline(
        {"name": "a", "function": fn("a"), "data": sel("co2"), "failover": "wait"},
        {"name": "b", "after": ["a"], "function": fn("b")},
    )
    n1, n2 = node("n1", ("r", "co2"), capacity=1), node("n2")
    plan = plan_pipeline(spec, [n1, n2], now=NOW)
    assert where(plan) == {("a", SINGLE): ("n1", "run"), ("b", SINGLE): ("n2", "run")}
    new = replan(plan, spec, [n2], [n1])
    a = new.instances("a")[0]
    assert (a.node, a.mode) == ("n1", "wait")
    assert a.reason == "failover: n1 down; its bundles wait, durable, until it returns"
    assert where(new)[("b", SINGLE)] == ("n2", "run")
    back = replan(new, spec, [n1, n2], [])
    assert where(back)[("a", SINGLE)] == ("n1", "run") and back.version == 3


def test_substitute_without_any_holder_waits() -> None:
    spec = pipeline({"name": "a", "function": fn("a"), "data": sel("co2")})
    n1, n2 = node("n1", ("r", "co2")), node("n2")
    plan = plan_pipeline(spec, [n1, n2], now=NOW)
    new = replan(plan, spec, [n2], [n1])
    a = new.instances("a")[0]
    assert (a.node, a.mode) == ("n1", "wait")
    assert "no other up node holds its data; its bundles wait" in a.reason
    assert where(replan(new, spec, [n1, n2], []))[("a", SINGLE)] == ("n1", "run")


def test_skip_with_the_skipper_down_too_moves_the_skipper() -> None:
    spec = pipeline(
        {"name": "a", "function": fn("a"), "data": sel("co2"), "failover": "skip"},
        {"name": "b", "after": ["a"], "function": fn("b"), "node": "n2"},
    )
    n1, n2, n3 = node("n1", ("r", "co2")), node("n2"), node("n3")
    plan = plan_pipeline(spec, [n1, n2, n3], now=NOW)
    new = replan(plan, spec, [n2, n3], [n1])
    assert where(new)[("a", SINGLE)] == ("n2", "skip")  # next to its downstream b
    # b is pinned: it cannot be substituted, so it waits for n2; a's skipper moves to n3
    newer = replan(new, spec, [n3], [n1, n2])
    assert where(newer)[("a", SINGLE)] == ("n3", "skip")
    assert where(newer)[("b", SINGLE)] == ("n2", "wait")
    assert "pinned to n2; its bundles wait" in newer.instances("b")[0].reason
    assert newer.instances("a")[0].home == "n1"


def test_nothing_up_everything_waits() -> None:
    spec = pipeline(
        {"name": "a", "function": fn("a"), "failover": "skip"},
        {"name": "b", "after": ["a"], "function": fn("b")},
    )
    n1 = node("n1")
    plan = plan_pipeline(spec, [n1], now=NOW)
    new = replan(plan, spec, [], [n1])
    assert {a.mode for a in new.assignments} == {"wait"}


def test_a_waiting_substitute_is_substituted_when_a_holder_comes_up() -> None:
    spec = pipeline({"name": "a", "function": fn("a"), "data": sel("co2")})
    n1, n2 = node("n1", ("r", "co2")), node("n2")
    plan = plan_pipeline(spec, [n1, n2], now=NOW)
    waiting = replan(plan, spec, [n2], [n1])
    assert where(waiting)[("a", SINGLE)] == ("n1", "wait")
    n3 = node("n3", ("r", "co2"))
    moved = replan(waiting, spec, [n2, n3], [n1])
    assert where(moved)[("a", SINGLE)] == ("n3", "run")
    assert moved.instances("a")[0].reason.startswith("failover: n1 down; substituted by n3")


def test_a_skipped_stage_is_passed_on_next_to_its_substituted_downstream() -> None:
    spec = pipeline(
        {"name": "a", "function": fn("a"), "data": sel("co2"), "failover": "skip"},
        {"name": "b", "after": ["a"], "function": fn("b")},
        {"name": "c", "after": ["b"], "function": fn("c"), "data": sel("valve")},
    )
    n1, n2, n3 = node("n1", ("r", "co2")), node("n2", ("r", "valve"), running=5), node("n3")
    plan = plan_pipeline(spec, [n1, n2, n3], now=NOW)
    assert where(plan) == {
        ("a", SINGLE): ("n1", "run"), ("b", SINGLE): ("n1", "run"), ("c", SINGLE): ("n2", "run")
    }  # fmt: skip
    new = replan(plan, spec, [n2, n3], [n1])
    assert where(new)[("b", SINGLE)] == ("n2", "run")  # next to c, which holds its data
    assert where(new)[("a", SINGLE)] == ("n2", "skip")  # passed on where b now runs


# --- properties ------------------------------------------------------------------------------

_TYPES = ["co2", "temp", "valve"]


@st.composite
def graphs(draw: st.DrawFn) -> tuple[PipelineSpec, list[NodeInfo], list[NodeInfo]]:
    n = draw(st.integers(2, 7))
    stages: list[dict[str, Any]] = []
    for i in range(n):
        after = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=2)) if i else []
        data = draw(st.sampled_from([None, *_TYPES]))
        s: dict[str, Any] = {"name": f"s{i}", "function": fn("f"),
                             "after": [f"s{j}" for j in after]}  # fmt: skip
        if data:
            s["data"] = sel(data)
            s["scatter"] = draw(st.booleans())
        s["failover"] = draw(st.sampled_from(["substitute", "skip", "wait"]))
        stages.append(s)
    fed = {a for s in stages for a in s["after"]}
    loose = [s["name"] for s in stages if not s["after"] and s["name"] not in fed]
    stages.append({"name": "end", "function": fn("f"),
                   "after": loose or [stages[-1]["name"]]})  # fmt: skip
    for s in stages:  # a gather timeout only where there are several inputs
        if len(s["after"]) > 1:
            s["gather"] = {"timeout_s": 1}
    spec = pipeline(*stages)
    nodes = [
        node(f"n{k}", *[("r", t) for t in draw(st.lists(st.sampled_from(_TYPES), unique=True))],
             capacity=draw(st.integers(1, 4)), running=draw(st.integers(0, 3)))
        for k in range(draw(st.integers(1, 4)))
    ]  # fmt: skip
    dead = draw(st.lists(st.sampled_from([x.name for x in nodes]), unique=True))
    return spec, nodes, [x for x in nodes if x.name in dead]


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_any_graph_is_planned_or_unplaceable_and_replans_keep_every_instance(
    case: tuple[PipelineSpec, list[NodeInfo], list[NodeInfo]],
) -> None:
    spec, nodes, dead = case
    try:
        plan = plan_pipeline(spec, nodes, now=NOW)
    except Unplaceable as exc:
        assert exc.context["stage"] in {s.name for s in spec.stages}
        return
    names = {x.name for x in nodes}
    assert {a.stage for a in plan.assignments} == {s.name for s in spec.stages}
    assert all(a.node in names and a.mode == "run" and a.reason for a in plan.assignments)
    alive = [x for x in nodes if x not in dead]
    new = replan(plan, spec, alive, dead)
    assert [(a.stage, a.instance) for a in new.assignments] == [
        (a.stage, a.instance) for a in plan.assignments
    ]
    up = {x.name for x in alive}
    for a in new.assignments:
        assert a.mode == "wait" or a.node in up, a
        assert a.mode != "run" or a.node in up, a
    assert replan(new, spec, alive, dead) is new  # stable
    back = replan(new, spec, nodes, [])
    assert all(a.mode == "run" and a.node in names for a in back.assignments)
