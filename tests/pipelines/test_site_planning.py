"""Where a pipeline's queue lives: the site every stage is planned at, or the hub; and the
re-planning rule that keeps a site pipeline at its site (pure planning, no servers)."""

from __future__ import annotations

from tests.pipelines.test_planner import NOW, fn, node, pipeline, sel

from fades.fabric.protocol import NodeInfo
from fades.pipelines.planner import plan_pipeline
from fades.pipelines.sites import plan_at_sites, queue_place, replan_at_site, sites_of


def at(site: str | None, n: NodeInfo, heard: float = NOW) -> NodeInfo:
    """``n`` at ``site``, last heard from at ``heard``."""
    return n.model_copy(update={"site": site, "heartbeat_at": heard})


def fleet() -> list[NodeInfo]:
    """Two nodes at site edge1 (room1), one at site edge2 (room2), one at no site (cloud).
    edge2's node is the least loaded, so a data-less stage would go there by default."""
    return [
        at("edge1", node("e1a", ("room1", "temperature"), running=3)),
        at("edge1", node("e1b", ("room1", "temperature"), running=3)),
        at("edge2", node("e2a", ("room2", "temperature"))),
        at(None, node("cloud")),
    ]


ROOM1 = pipeline(
    {"name": "read", "function": fn("r"), "data": sel("temperature", location="room1")},
    {"name": "report", "after": ["read"], "function": fn("rep")},
)


def test_a_pipeline_whose_stages_are_all_at_one_site_keeps_its_queue_there() -> None:
    plan = plan_at_sites(ROOM1, fleet(), now=NOW)
    assert {a.node for a in plan.assignments} <= {"e1a", "e1b"}
    assert plan.domain == "edge1"
    where = queue_place(plan, sites_of(fleet()))
    assert where["site"] == "edge1" and where["survives_uplink_cut"] is True
    assert "keeps running while the site's uplink is down" in where["where"]


def test_a_data_less_stage_that_spilled_off_site_is_kept_at_its_data_s_site() -> None:
    # read's node (capacity 1) is full, so report spills to the least loaded node with room:
    # e2a at edge2, which would leave the pipeline across two sites
    nodes = [
        at("edge1", node("e1a", ("room1", "temperature"), capacity=1)),
        at("edge1", node("e1b", running=3)),
        at("edge2", node("e2a")),
    ]
    plain = plan_pipeline(ROOM1, nodes, now=NOW)
    assert plain.instances("report")[0].node == "e2a"
    plan = plan_at_sites(ROOM1, nodes, now=NOW)
    assert plan.domain == "edge1"
    assert [(a.stage, a.node) for a in plan.assignments] == [("read", "e1a"), ("report", "e1b")]


def test_a_pipeline_across_two_sites_or_at_no_site_keeps_its_queue_in_the_hub() -> None:
    both = pipeline(
        {"name": "r1", "function": fn("r"), "data": sel("temperature", location="room1")},
        {"name": "r2", "function": fn("r"), "data": sel("temperature", location="room2")},
        {"name": "join", "after": ["r1", "r2"], "function": fn("j")},
    )
    plan = plan_at_sites(both, fleet(), now=NOW)
    assert plan.domain is None
    where = queue_place(plan, sites_of(fleet()))
    assert where["survives_uplink_cut"] is False
    assert "sites edge1, edge2" in where["where"] and "gets no bundles" in where["where"]
    cloud_only = [at(None, node("cloud")), at(None, node("cloud2"))]
    plan = plan_at_sites(pipeline({"name": "a", "function": fn("a")}), cloud_only, now=NOW)
    assert plan.domain is None
    assert (
        queue_place(plan, sites_of(cloud_only))["where"] == "in the hub: its nodes are at no site"
    )


def test_a_site_pipeline_fails_over_only_within_its_site_and_is_left_alone_when_unreachable() -> (
    None
):
    nodes = fleet()
    plan = plan_at_sites(ROOM1, nodes, now=NOW)
    home = plan.instances("read")[0].node
    other = "e1b" if home == "e1a" else "e1a"
    up = [n for n in nodes if n.name != home]
    # it went quiet with the rest of its site (a heartbeat apart): maybe the uplink, not it
    quiet = [at("edge1", n, NOW - 0.5) for n in nodes if n.name == home]
    assert replan_at_site(plan, ROOM1, up, quiet) is plan
    # the rest of the site has been heard from for a while since: it is dead
    down = [at("edge1", n, NOW - 10) for n in nodes if n.name == home]
    moved = replan_at_site(plan, ROOM1, up, down)
    assert moved.version == plan.version + 1 and moved.domain == "edge1"
    assert {a.node for a in moved.assignments} == {other}  # never the idle e2a or cloud
    # the whole site unreachable (its uplink is cut, or it is down): nothing is decided
    up = [n for n in nodes if n.site != "edge1"]
    down = [n for n in nodes if n.site == "edge1"]
    assert replan_at_site(plan, ROOM1, up, down) is plan
    # a data-less stage with no node of the site left to take it waits there (not moved)
    only = [nodes[0], nodes[2], nodes[3]]
    spec = pipeline({"name": "tick", "function": fn("t"), "node": "e1a"},
                    {"name": "sum", "after": ["tick"], "function": fn("s")})  # fmt: skip
    plan = plan_at_sites(spec, only, now=NOW)
    assert plan.domain == "edge1"
    gone = replan_at_site(plan, spec, [nodes[2], nodes[3]], [at("edge1", nodes[0], NOW - 60)])
    assert gone is plan
