"""Pipelines at a site: which JetStream domain holds a pipeline's bundle stream, and the
re-planning rule that keeps it there.

A *site* is a leaf server with its own JetStream domain (the node's registry entry says
``site``). A pipeline whose stage instances are all planned onto nodes of one site keeps its
bundle stream ``FADES_B_<pipeline>`` in that site's domain (:attr:`Plan.domain`): its nodes
hand bundles to each other through the leaf, so the pipeline, its automatic triggers and
its stages keep running while the site's uplink to the hub is down. Stage events go up
through :meth:`~fades.bus.base.Bus.publish_up`: they wait at the site and reach the
controller when the link returns. Every other pipeline keeps its stream in the hub.

Planning (:func:`plan_at_sites`): the usual plan first. When the stages that cannot move
(with data, or pinned) are all at one site but a data-less stage landed elsewhere, the
pipeline is planned again on that site's nodes only, so the data-less stages stay with
their data and the whole pipeline is local.

Re-planning (:func:`replan_at_site`): a site pipeline is re-planned only among the nodes of
its own site, so its stream never has to move and no bundle is stranded in a domain nobody
reads. While no node of the site is up as the controller sees it (the site is down, or only
its uplink is), the plan is left as it is: the controller cannot tell the two apart, and
the site carries on by itself if only the link is cut. A stage that no node of the site can
take falls back to ``skip`` or ``wait`` as usual (its bundles wait in the site's stream).
Moving a site pipeline elsewhere is an explicit resubmit with ``replace``; the receipt says
how many bundles were left in the old queue.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from fades.bus.base import Bus
from fades.errors import Unplaceable
from fades.fabric.protocol import NodeInfo
from fades.pipelines.planner import plan_pipeline, replan
from fades.pipelines.protocol import Plan
from fades.pipelines.spec import PipelineSpec
from fades.placers import Placer

#: seconds the rest of a site must have been heard from after one of its nodes went quiet
#: before that node's stages are moved (a cut uplink silences the whole site at once)
SITE_SETTLE_S = 3.0

__all__ = [
    "pipeline_bus",
    "plan_at_sites",
    "queue_place",
    "replan_at_site",
    "site_reachable",
    "sites_of",
]


def sites_of(nodes: Sequence[NodeInfo]) -> dict[str, str | None]:
    """Node name -> its site (None: no site)."""
    return {n.name: n.site for n in nodes}


def pipeline_bus(bus: Bus, plan: Plan) -> Bus:
    """The bus on which ``plan``'s bundle stream lives: the site's domain, or ``bus``."""
    return bus if plan.domain is None else bus.in_domain(plan.domain)


def _one_site(plan: Plan, sites: Mapping[str, str | None]) -> str | None:
    found = {sites.get(a.node) for a in plan.assignments}
    if len(found) == 1:
        return next(iter(found))
    return None


def plan_at_sites(
    spec: PipelineSpec,
    up: Sequence[NodeInfo],
    down: Sequence[NodeInfo] = (),
    placer: Placer | None = None,
    *,
    now: float | None = None,
) -> Plan:
    """:func:`~fades.pipelines.planner.plan_pipeline`, with ``domain`` set to the site every
    stage instance is at (see the module docstring).

    Raises:
        Unplaceable, PipelineValidationError: as ``plan_pipeline``.
    """
    now = time.time() if now is None else now
    plan = plan_pipeline(spec, up, down, placer, now=now)
    sites = sites_of(up)
    site = _one_site(plan, sites)
    if site is not None:
        return plan.model_copy(update={"domain": site})
    fixed = {
        a.node
        for a in plan.assignments
        if spec.stage(a.stage).data or spec.stage(a.stage).node is not None
    }
    at = {sites.get(n) for n in fixed}
    if not fixed or len(at) != 1 or None in at:
        return plan
    site = next(iter(at))
    local = [n for n in up if n.site == site]
    try:
        again = plan_pipeline(spec, local, down, placer, now=now)
    except Unplaceable:
        return plan
    if _one_site(again, sites) != site:
        return plan
    return again.model_copy(update={"domain": site})


def replan_at_site(
    plan: Plan,
    spec: PipelineSpec,
    up: Sequence[NodeInfo],
    down: Sequence[NodeInfo],
    placer: Placer | None = None,
) -> Plan:
    """:func:`~fades.pipelines.planner.replan`, keeping a site pipeline at its site: only
    the site's nodes are candidates; with none of them up, or while a node of the site has
    gone down too recently to tell a dead node from a cut uplink, the plan stays as it is."""
    if plan.domain is None:
        return replan(plan, spec, up, down, placer)
    local = [n for n in up if n.site == plan.domain]
    if not local or not _settled(plan.domain, local, down):
        return plan
    return replan(plan, spec, local, down, placer)


def _settled(site: str, local: Sequence[NodeInfo], down: Sequence[NodeInfo]) -> bool:
    """Whether every down node of ``site`` is known dead, not cut off with the rest of the
    site: another node of the site has been heard from at least :data:`SITE_SETTLE_S` (or
    two heartbeats) after the down node's last heartbeat. When the uplink is cut, all the
    site's nodes go quiet within one heartbeat of each other, so none of them settles."""
    newest = max(n.heartbeat_at for n in local)
    beat = max(n.heartbeat_s for n in local)
    return all(
        newest - n.heartbeat_at >= max(SITE_SETTLE_S, 2 * max(beat, n.heartbeat_s))
        for n in down
        if n.site == site
    )


def site_reachable(plan: Plan, up: Sequence[NodeInfo]) -> bool:
    """Whether the controller sees a node of ``plan``'s site up (always True in the hub)."""
    return plan.domain is None or any(n.site == plan.domain for n in up)


def queue_place(plan: Plan, sites: Mapping[str, str | None]) -> dict[str, Any]:
    """Where the pipeline's queue lives and whether it survives an uplink cut (for
    ``fades pipeline plan`` and ``pipeline status``)."""
    if plan.domain is not None:
        return {
            "domain": plan.domain,
            "site": plan.domain,
            "survives_uplink_cut": True,
            "where": (
                f"at site {plan.domain} (its own JetStream): the pipeline keeps running while "
                "the site's uplink is down; its events reach the controller when the link "
                "returns"
            ),
        }
    at = sorted({s for a in plan.assignments if (s := sites.get(a.node)) is not None})
    if not at:
        where = "in the hub: its nodes are at no site"
    else:
        where = (
            f"in the hub: its stages run at {'site' if len(at) == 1 else 'sites'} "
            f"{', '.join(at)}"
            + (" and at nodes at no site" if any(sites.get(a.node) is None
                                                for a in plan.assignments) else "")
            + "; a stage whose site's uplink is down gets no bundles until it returns"
        )  # fmt: skip
    return {"domain": None, "site": None, "survives_uplink_cut": False, "where": where}
