"""The Nimbus allocation algorithm (warm-up, core, fallback), one device at a time.

For device ``i`` on access point ``a`` and edge node ``j``::

    Lt_ij = 8*d_i / BW_ij + RTT_aj             network part (ms; d in KB, BW in Mbps)
    L_ij  = Lt_ij + TET_j + q_j(load_j + 1)     the queue the device sees once it joins
    B_ij  = Lt_ij * w_i                         transmission energy (mJ)

Warm-up keeps nodes reachable from ``a`` whose RTT and current queue time are below
``eps_t`` (FilterAndMinimize), drops nodes where one more client would push their
worst-placed client over its own bound (LookAheadLoad), and optionally keeps a random
subset of ``kappa`` nodes. Core drops nodes with ``L_ij >= eps_t`` or ``B_ij >= eps_b`` and
picks ``argmin alpha*L_ij/eps_t + beta*load_j/maxload_j``. Fallback picks the datacenter
with the lowest RTT (constant inference time) if it meets both bounds; otherwise the task
runs locally.

The same engine runs the baselines: only the selection rule over the feasible nodes
changes (see :class:`Rule`), so every method respects the same constraints.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from fades.errors import PlacementError
from fades.placement.model import (
    CLOUD,
    LOCAL,
    Allocation,
    Devices,
    FloatArray,
    Infrastructure,
    IntArray,
    queue_time,
)

__all__ = [
    "NimbusParams",
    "PlacementState",
    "Rule",
    "nimbus_score",
    "solve",
]


class Rule(StrEnum):
    """How a node is chosen among the feasible candidates."""

    NIMBUS = "nimbus"  # argmin alpha*L/eps_t + beta*load/maxload
    GREEDY = "greedy"  # lowest latency, no load balancing (alpha=1, beta=0)
    NEAREST = "nearest"  # lowest RTT
    LEAST_LOADED = "least_loaded"  # lowest load/maxload
    RANDOM = "random"  # any feasible node


@dataclass(frozen=True, slots=True)
class NimbusParams:
    """Algorithm knobs. ``kappa = 0`` keeps every candidate (the published default)."""

    alpha: float = 0.7
    beta: float = 0.3
    kappa: int = 0
    rule: Rule = Rule.NIMBUS
    lookahead: bool = True

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or self.kappa < 0:
            raise PlacementError("alpha, beta and kappa must be non-negative")


def nimbus_score(
    latency_ms: FloatArray,
    eps_t_ms: float,
    load: IntArray | FloatArray,
    maxload: IntArray | FloatArray,
    alpha: float,
    beta: float,
) -> FloatArray:
    """The balance-ensuring objective ``alpha*L/eps_t + beta*load/maxload``."""
    return alpha * latency_ms / eps_t_ms + beta * load / np.maximum(maxload, 1)


class PlacementState:
    """Loads and queue times of every node while a batch is being placed.

    Allocating a device to a node raises that node's queue time, and the predicted latency
    of every client already on it is updated at once.
    """

    def __init__(self, infra: Infrastructure, devices: Devices, eps_ref_ms: float) -> None:
        self.infra = infra
        self.devices = devices
        m = infra.n_nodes
        n = devices.n
        self.maxload = infra.maxload(eps_ref_ms)
        self.load = np.zeros(m, dtype=np.int64)
        self.q_now = np.zeros(m)
        self.q_next = queue_time(infra.slope_ms, infra.intercept_ms, np.ones(m, dtype=np.int64))
        # min over a node's clients of (their eps_t - their network time): how much service
        # time the node may take before its worst-placed client breaks its bound.
        self.min_slack = np.full(m, np.inf)
        self.members: list[list[int]] = [[] for _ in range(m)]
        per_ap = np.bincount(devices.ap, minlength=infra.n_aps)
        self.wifi_share = infra.wifi_mbps / np.maximum(per_ap, 1)
        self.target = np.full(n, LOCAL, dtype=np.int64)
        self.cloud = np.full(n, -1, dtype=np.int64)
        self.net = np.zeros(n)
        self.latency = devices.local_ms.copy()
        self.energy = devices.local_mj.copy()

    def assign_edge(self, i: int, j: int, net_ms: float) -> None:
        """Put device ``i`` on node ``j``; refresh the queue time of all its clients."""
        infra = self.infra
        old = int(self.target[i])
        if old >= 0:
            raise PlacementError("device already placed on an edge node", device=i, node=old)
        load = int(self.load[j]) + 1
        self.load[j] = load
        s, b = float(infra.slope_ms[j]), float(infra.intercept_ms[j])
        self.q_now[j] = max(0.0, s * load + b)
        self.q_next[j] = max(0.0, s * (load + 1) + b)
        self.target[i] = j
        self.cloud[i] = -1
        self.net[i] = net_ms
        self.energy[i] = net_ms * float(self.devices.tx_power[i])
        slack = float(self.devices.eps_t_ms[i]) - net_ms
        if slack < self.min_slack[j]:
            self.min_slack[j] = slack
        members = self.members[j]
        members.append(i)
        service = float(infra.compute_ms[j]) + float(self.q_now[j])
        self.latency[members] = self.net[members] + service

    def assign_cloud(self, i: int, k: int, net_ms: float) -> None:
        self.target[i] = CLOUD
        self.cloud[i] = k
        self.net[i] = net_ms
        self.latency[i] = net_ms + self.infra.cloud_inference_ms
        self.energy[i] = net_ms * float(self.devices.tx_power[i])

    def to_allocation(self, method: str, convergence_s: float) -> Allocation:
        return Allocation(
            method=method,
            target=self.target.copy(),
            cloud=self.cloud.copy(),
            latency_ms=self.latency.copy(),
            energy_mj=self.energy.copy(),
            local_ms=self.devices.local_ms.copy(),
            local_mj=self.devices.local_mj.copy(),
            loads=self.load.copy(),
            maxload=self.maxload.copy(),
            convergence_s=convergence_s,
        )

    def adopt(self, other: Allocation, node_map: IntArray, device_idx: IntArray) -> None:
        """Copy a slice's decisions into this state in one vectorised step.

        ``node_map`` maps the slice's node indices to ours and ``device_idx`` its devices.
        The slices of one MT solve are disjoint, so no node or device is adopted twice.
        """
        infra, dev = self.infra, self.devices
        t = other.target
        edge = t >= 0
        gi = device_idx[edge]
        if np.any(self.target[gi] >= 0):
            raise PlacementError("adopting a device that is already on an edge node")
        gj = node_map[t[edge]]
        a = dev.ap[gi]
        bw = np.minimum(self.wifi_share[a], infra.node_bw_mbps[gj])
        net = 8.0 * dev.data_kb[gi] / bw + infra.rtt_ms[a, gj]
        self.target[gi] = gj
        self.cloud[gi] = -1
        self.net[gi] = net
        self.energy[gi] = net * dev.tx_power[gi]
        np.add.at(self.load, gj, 1)
        np.minimum.at(self.min_slack, gj, dev.eps_t_ms[gi] - net)
        for i, j in zip(gi.tolist(), gj.tolist(), strict=True):
            self.members[j].append(i)
        touched = np.unique(gj)
        self.q_now[touched] = queue_time(
            infra.slope_ms[touched], infra.intercept_ms[touched], self.load[touched]
        )
        self.q_next[touched] = queue_time(
            infra.slope_ms[touched], infra.intercept_ms[touched], self.load[touched] + 1
        )
        self.latency[gi] = net + infra.compute_ms[gj] + self.q_now[gj]

        in_cloud = t == CLOUD
        ci = device_idx[in_cloud]
        cnet = other.latency_ms[in_cloud] - infra.cloud_inference_ms
        self.target[ci] = CLOUD
        self.cloud[ci] = other.cloud[in_cloud]
        self.net[ci] = cnet
        self.latency[ci] = other.latency_ms[in_cloud]
        self.energy[ci] = cnet * dev.tx_power[ci]


def _pick(
    rule: Rule,
    cand: IntArray,
    lat: FloatArray,
    rtt: FloatArray,
    state: PlacementState,
    eps_t: float,
    params: NimbusParams,
    rng: np.random.Generator,
) -> int:
    if rule is Rule.NIMBUS:
        score = nimbus_score(
            lat, eps_t, state.load[cand], state.maxload[cand], params.alpha, params.beta
        )
        return int(cand[int(np.argmin(score))])
    if rule is Rule.GREEDY:
        return int(cand[int(np.argmin(lat))])
    if rule is Rule.NEAREST:
        return int(cand[int(np.argmin(rtt))])
    if rule is Rule.LEAST_LOADED:
        frac = state.load[cand] / np.maximum(state.maxload[cand], 1)
        return int(cand[int(np.argmin(frac))])
    return int(cand[int(rng.integers(cand.shape[0]))])


def place_one(
    state: PlacementState, i: int, params: NimbusParams, rng: np.random.Generator
) -> None:
    """Run warm-up, core and fallback for device ``i`` against ``state``."""
    infra, dev = state.infra, state.devices
    a = int(dev.ap[i])
    eps_t = float(dev.eps_t_ms[i])
    eps_b = float(dev.eps_b_mj[i])
    w = float(dev.tx_power[i])
    d = float(dev.data_kb[i])
    share = float(state.wifi_share[a])

    if infra.n_nodes:
        rtt_row = infra.rtt_ms[a]
        # Warm-up: FilterAndMinimize (reachable, RTT and current queue below eps_t) ...
        mask = (rtt_row < eps_t) & (state.q_now < eps_t)
        # ... LookAheadLoad (one more client must not break the worst-placed client).
        if params.lookahead:
            mask &= infra.compute_ms + state.q_next <= state.min_slack
        cand = np.flatnonzero(mask)
        if params.kappa and cand.shape[0] > params.kappa:
            cand = rng.choice(cand, params.kappa, replace=False)
        if cand.shape[0]:
            rtt = rtt_row[cand]
            bw = np.minimum(share, infra.node_bw_mbps[cand])
            net = 8.0 * d / bw + rtt
            lat = net + infra.compute_ms[cand] + state.q_next[cand]
            # Core: drop nodes that break either bound, then choose.
            ok = (lat < eps_t) & (net * w < eps_b)
            if ok.any():
                if not ok.all():
                    cand, lat, rtt, net = cand[ok], lat[ok], rtt[ok], net[ok]
                j = _pick(params.rule, cand, lat, rtt, state, eps_t, params, rng)
                pos = int(np.flatnonzero(cand == j)[0])
                state.assign_edge(i, j, float(net[pos]))
                return
    # Fallback: FindClosest datacenter by RTT, constant inference time.
    if infra.n_clouds:
        crow = infra.cloud_rtt_ms[a]
        k = int(np.argmin(crow))
        net_c = 8.0 * d / share + float(crow[k])
        if net_c + infra.cloud_inference_ms <= eps_t and net_c * w <= eps_b:
            state.assign_cloud(i, k, net_c)


def solve(
    infra: Infrastructure,
    devices: Devices,
    params: NimbusParams | None = None,
    *,
    rng: np.random.Generator | int | None = None,
    order: Iterable[int] | None = None,
    state: PlacementState | None = None,
    method: str | None = None,
) -> Allocation:
    """Place every device (in ``order``, default: as given) and return the allocation.

    Args:
        infra: the infrastructure.
        devices: the batch.
        params: algorithm knobs; the rule selects Nimbus or a baseline.
        rng: randomness for ``kappa`` subsets and the random baseline.
        order: device indices to place (e.g. only the unplaced ones in 2PMT's second pass).
        state: continue from an existing state instead of an empty infrastructure.
        method: label stored on the result (default: the rule's name).
    """
    params = params or NimbusParams()
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if devices.n and (devices.ap.min() < 0 or devices.ap.max() >= infra.n_aps):
        raise PlacementError("a device names an access point outside the infrastructure")
    t0 = time.perf_counter()
    if state is None:
        eps_ref = float(devices.eps_t_ms.max()) if devices.n else 0.0
        state = PlacementState(infra, devices, eps_ref)
    for i in range(devices.n) if order is None else order:
        place_one(state, int(i), params, gen)
    elapsed = time.perf_counter() - t0
    return state.to_allocation(method or params.rule.value, elapsed)
