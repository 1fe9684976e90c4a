"""One placement decision from live data: the entry point for the controller.

The controller knows, for each candidate node, its RTT from the requesting device's access
point, its current client count, its queue model and the bandwidth towards it. :func:`choose`
runs Nimbus's warm-up, core and fallback on exactly those figures and returns the choice,
its score and the reason every other candidate was passed over. It keeps no state: after a
placement the caller records the new client (load + 1) itself.

Example::

    from fades.placement.api import Candidate, Request, choose
    from fades.placement.model import QueueModel

    gtx = QueueModel(slope_ms=7.09, intercept_ms=-11.6, compute_ms=7.2)
    choice = choose(
        [Candidate("edge-a", rtt_ms=12.0, load=3, queue=gtx, bandwidth_mbps=100.0)],
        Request(data_kb=33.0, eps_t_ms=66.6, eps_b_mj=182.0),
    )
    print(choice.kind, choice.target, choice.score, choice.latency_ms)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fades.errors import PlacementError
from fades.placement.model import QueueModel
from fades.placement.nimbus import nimbus_score

__all__ = ["Candidate", "Choice", "CloudOption", "Request", "choose"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A live edge node as seen from the requesting device.

    Attributes:
        node_id: the node's name.
        rtt_ms: RTT from the device's access point (``inf`` = unreachable).
        load: clients the node serves now.
        queue: the node's queue model.
        bandwidth_mbps: bandwidth available to this device towards the node.
        worst_slack_ms: over the node's current clients, the least ``eps_t - network
            time``; when given, LookAheadLoad refuses the node if one more client would
            push that client past its bound. ``None`` skips the look-ahead.
        maxload: client capacity used by the load term; by default the queue model
            inverted at the request's ``eps_t``.
    """

    node_id: str
    rtt_ms: float
    load: int
    queue: QueueModel
    bandwidth_mbps: float
    worst_slack_ms: float | None = None
    maxload: int | None = None


@dataclass(frozen=True, slots=True)
class CloudOption:
    """A datacenter reachable by the device (constant inference time, no queue)."""

    cloud_id: str
    rtt_ms: float
    bandwidth_mbps: float
    inference_ms: float = 5.0


@dataclass(frozen=True, slots=True)
class Request:
    """One device's task: frame size, bounds and radio power.

    ``eps_b_mj`` is usually the energy of running the task locally (``local_mj``).
    """

    data_kb: float
    eps_t_ms: float
    eps_b_mj: float
    tx_power_mj_per_ms: float = 1.21
    local_ms: float | None = None
    local_mj: float | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    """The decision: where the task runs and what it is predicted to cost per frame."""

    kind: Literal["edge", "cloud", "local"]
    target: str | None
    score: float | None
    latency_ms: float | None
    energy_mj: float | None
    saved_mj: float | None
    rejected: dict[str, str] = field(default_factory=dict)


def _validate(candidates: Sequence[Candidate], request: Request) -> None:
    if request.data_kb < 0 or request.eps_t_ms <= 0 or request.eps_b_mj < 0:
        raise PlacementError("request needs data_kb >= 0, eps_t_ms > 0 and eps_b_mj >= 0")
    if request.tx_power_mj_per_ms < 0:
        raise PlacementError("transmission power must be non-negative")
    seen: set[str] = set()
    for c in candidates:
        if c.node_id in seen:
            raise PlacementError("duplicate candidate", node=c.node_id)
        seen.add(c.node_id)
        if not c.rtt_ms >= 0 or c.load < 0 or not c.bandwidth_mbps > 0:
            raise PlacementError(
                "candidate needs rtt_ms >= 0, load >= 0 and bandwidth_mbps > 0", node=c.node_id
            )


def choose(
    candidates: Sequence[Candidate],
    request: Request,
    clouds: Sequence[CloudOption] = (),
    *,
    alpha: float = 0.7,
    beta: float = 0.3,
    kappa: int = 0,
    rng: np.random.Generator | int | None = None,
) -> Choice:
    """Pick the node (or cloud, or local execution) for one request, as Nimbus does.

    Raises:
        PlacementError: a malformed candidate or request.
    """
    _validate(candidates, request)
    eps_t, eps_b, w = request.eps_t_ms, request.eps_b_mj, request.tx_power_mj_per_ms
    rejected: dict[str, str] = {}
    survivors: list[Candidate] = []
    # Warm-up: FilterAndMinimize then LookAheadLoad.
    for c in candidates:
        if not c.rtt_ms < eps_t:
            rejected[c.node_id] = "rtt >= eps_t (or unreachable)"
        elif not c.queue.queue_ms(c.load) < eps_t:
            rejected[c.node_id] = "queue time >= eps_t"
        elif (
            c.worst_slack_ms is not None
            and c.load > 0
            and c.queue.service_ms(c.load + 1) > c.worst_slack_ms
        ):
            rejected[c.node_id] = "look-ahead: one more client breaks an existing client"
        else:
            survivors.append(c)
    if kappa and len(survivors) > kappa:
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        keep = set(gen.choice(len(survivors), kappa, replace=False).tolist())
        for k, c in enumerate(survivors):
            if k not in keep:
                rejected[c.node_id] = "not in the random kappa subset"
        survivors = [c for k, c in enumerate(survivors) if k in keep]

    # Core: predicted latency with this client added, energy of the transfer.
    best: tuple[float, Candidate, float, float] | None = None
    for c in survivors:
        net = 8.0 * request.data_kb / c.bandwidth_mbps + c.rtt_ms
        lat = net + c.queue.service_ms(c.load + 1)
        energy = net * w
        if not lat < eps_t:
            rejected[c.node_id] = f"latency {lat:.1f} ms >= eps_t"
            continue
        if not energy < eps_b:
            rejected[c.node_id] = f"energy {energy:.1f} mJ >= eps_b"
            continue
        cap = c.maxload if c.maxload is not None else c.queue.max_clients(eps_t)
        score = float(
            nimbus_score(np.array([lat]), eps_t, np.array([c.load]), np.array([cap]), alpha, beta)[
                0
            ]
        )
        if best is None or score < best[0]:
            if best is not None:
                rejected[best[1].node_id] = "higher score"
            best = (score, c, lat, energy)
        else:
            rejected[c.node_id] = "higher score"
    saved = None
    if best is not None:
        score, c, lat, energy = best
        if request.local_mj is not None:
            saved = request.local_mj - energy
        return Choice("edge", c.node_id, score, lat, energy, saved, rejected)

    # Fallback: the closest datacenter by RTT, if it meets both bounds.
    if clouds:
        cloud = min(clouds, key=lambda x: x.rtt_ms)
        net = 8.0 * request.data_kb / cloud.bandwidth_mbps + cloud.rtt_ms
        lat = net + cloud.inference_ms
        energy = net * w
        if lat <= eps_t and energy <= eps_b:
            if request.local_mj is not None:
                saved = request.local_mj - energy
            return Choice("cloud", cloud.cloud_id, None, lat, energy, saved, rejected)
    return Choice("local", None, None, request.local_ms, request.local_mj, 0.0, rejected)
