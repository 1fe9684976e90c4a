"""Baselines for Nimbus: simple selection rules and an exact integer program.

The rule baselines (random, nearest, least-loaded, greedy) run through the same engine as
Nimbus and so obey the same constraints; only the choice among feasible nodes differs.
The exact optimum minimises the total per-frame latency of the batch (local execution
counted at its local time), i.e. the published objective once every device must run
somewhere, with the queue time modelled exactly through one binary per (node, client
count). It is solved with :func:`scipy.optimize.milp` and is meant for small instances.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from fades.errors import PlacementError
from fades.placement.model import CLOUD, LOCAL, Allocation, Devices, Infrastructure
from fades.placement.nimbus import NimbusParams, Rule, solve

__all__ = ["RULE_BASELINES", "run_baseline", "solve_exact", "total_latency"]

#: Baselines that only change the selection rule of the engine.
RULE_BASELINES: tuple[str, ...] = ("random", "nearest", "least_loaded", "greedy")

# Strict bounds (L < eps) in Nimbus; the integer program needs a closed set.
_STRICT = 1e-7


def run_baseline(
    name: str,
    infra: Infrastructure,
    devices: Devices,
    *,
    rng: np.random.Generator | int | None = None,
) -> Allocation:
    """Run one rule baseline (see :data:`RULE_BASELINES`) or ``"exact"``."""
    if name == "exact":
        return solve_exact(infra, devices)
    if name not in RULE_BASELINES:
        raise PlacementError(f"unknown baseline {name!r}", baseline=name)
    params = NimbusParams(rule=Rule(name), alpha=1.0, beta=0.0)
    return solve(infra, devices, params, rng=rng, method=name)


def total_latency(al: Allocation) -> float:
    """The objective shared by every method: summed per-frame latency of the batch."""
    return float(np.sum(al.latency_ms))


def solve_exact(
    infra: Infrastructure,
    devices: Devices,
    *,
    objective: str = "latency",
    time_limit_s: float = 60.0,
) -> Allocation:
    """Optimal allocation of a small instance.

    Args:
        objective: ``"latency"`` minimises the summed per-frame latency of the batch (the
            cloud may be used even where an edge node is feasible); ``"edge"`` maximises the
            number of devices served by edge nodes, breaking ties by the summed latency.

    Raises:
        PlacementError: the solver did not prove optimality within ``time_limit_s``.
    """
    t0 = time.perf_counter()
    n, m = devices.n, infra.n_nodes
    eps_ref = float(devices.eps_t_ms.max()) if n else 0.0
    maxload = infra.maxload(eps_ref)
    if n == 0:
        empty = np.zeros(0)
        return Allocation(
            method=f"exact-{objective}",
            target=np.zeros(0, dtype=np.int64),
            cloud=np.zeros(0, dtype=np.int64),
            latency_ms=empty,
            energy_mj=empty,
            local_ms=empty,
            local_mj=empty,
            loads=np.zeros(m, dtype=np.int64),
            maxload=maxload,
        )
    per_ap = np.bincount(devices.ap, minlength=infra.n_aps)
    share = infra.wifi_mbps / np.maximum(per_ap, 1)

    # Network time of every (device, node) pair and of each device's best cloud.
    bw = np.minimum(share[devices.ap][:, None], infra.node_bw_mbps[None, :])
    net = 8.0 * devices.data_kb[:, None] / bw + infra.rtt_ms[devices.ap]
    q1 = np.maximum(0.0, infra.slope_ms + infra.intercept_ms)
    first = net + infra.compute_ms[None, :] + q1[None, :]
    pair_ok = (
        np.isfinite(net)
        & (first <= devices.eps_t_ms[:, None] - _STRICT)
        & (net * devices.tx_power[:, None] <= devices.eps_b_mj[:, None] - _STRICT)
        & (maxload[None, :] >= 1)
    )
    pi, pj = np.nonzero(pair_ok)
    n_pairs = pi.shape[0]

    cloud_net = np.full(n, np.inf)
    cloud_k = np.full(n, -1, dtype=np.int64)
    if infra.n_clouds:
        crow = infra.cloud_rtt_ms[devices.ap]
        cloud_k = np.argmin(crow, axis=1).astype(np.int64)
        cloud_net = 8.0 * devices.data_kb / share[devices.ap] + crow[np.arange(n), cloud_k]
    cloud_ok = (cloud_net + infra.cloud_inference_ms <= devices.eps_t_ms) & (
        cloud_net * devices.tx_power <= devices.eps_b_mj
    )
    ci = np.flatnonzero(cloud_ok)
    n_cloud = ci.shape[0]

    # y[j, c] for c = 0..maxload_j: node j ends with exactly c clients.
    y_node = np.repeat(np.arange(m), maxload + 1)
    y_c = np.concatenate([np.arange(k + 1) for k in maxload.tolist()]) if m else np.zeros(0)
    y_c = y_c.astype(np.float64)
    y_q = np.maximum(0.0, infra.slope_ms[y_node] * y_c + infra.intercept_ms[y_node])
    y_q[y_c == 0] = 0.0
    n_y = y_node.shape[0]

    ox, oz, ou, oy = 0, n_pairs, n_pairs + n_cloud, n_pairs + n_cloud + n
    n_var = oy + n_y
    cost = np.concatenate(
        [
            net[pi, pj] + infra.compute_ms[pj],
            cloud_net[ci] + infra.cloud_inference_ms,
            devices.local_ms,
            y_c * y_q,
        ]
    )
    if objective == "edge":
        # Lexicographic: one more edge device outweighs any latency difference.
        weight = 1.0 + float(np.sum(np.maximum(devices.local_ms, devices.eps_t_ms)))
        cost[ox : ox + n_pairs] -= weight
    elif objective != "latency":
        raise PlacementError(f"unknown exact objective {objective!r}")

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    lo: list[np.ndarray] = []
    hi: list[np.ndarray] = []
    r = 0
    # Each device: exactly one of its edge pairs, the cloud, or local.
    rows += [pi, ci, np.arange(n)]
    cols += [ox + np.arange(n_pairs), oz + np.arange(n_cloud), ou + np.arange(n)]
    vals += [np.ones(n_pairs), np.ones(n_cloud), np.ones(n)]
    lo.append(np.ones(n))
    hi.append(np.ones(n))
    r += n
    # Each node: sum_i x_ij - sum_c c*y_jc = 0 and sum_c y_jc = 1.
    rows += [r + pj, r + y_node, r + m + y_node]
    cols += [ox + np.arange(n_pairs), oy + np.arange(n_y), oy + np.arange(n_y)]
    vals += [np.ones(n_pairs), -y_c, np.ones(n_y)]
    lo += [np.zeros(m), np.ones(m)]
    hi += [np.zeros(m), np.ones(m)]
    r += 2 * m
    # Each pair: if x_ij = 1, net + compute + q_j(final count) <= eps_i.
    if n_pairs:
        big = np.zeros(m)
        np.maximum.at(big, y_node, y_q)
        starts = np.concatenate([[0], np.cumsum(maxload + 1)])
        for p in range(n_pairs):
            j = int(pj[p])
            ys = np.arange(starts[j], starts[j + 1])
            rows += [np.full(ys.shape[0] + 1, r + p)]
            cols += [np.concatenate([oy + ys, [ox + p]])]
            vals += [np.concatenate([y_q[ys], [big[j]]])]
        budget = devices.eps_t_ms[pi] - _STRICT - net[pi, pj] - infra.compute_ms[pj] + big[pj]
        lo.append(np.full(n_pairs, -np.inf))
        hi.append(budget)
        r += n_pairs

    a_mat = coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, n_var)
    ).tocsr()
    res = milp(
        cost,
        constraints=LinearConstraint(a_mat, np.concatenate(lo), np.concatenate(hi)),
        integrality=np.ones(n_var),
        bounds=Bounds(0, 1),
        options={"time_limit": time_limit_s, "mip_rel_gap": 1e-9},
    )
    if res.status != 0 or res.x is None:
        raise PlacementError(f"exact solver failed: {res.message}", status=res.status)
    x = np.round(res.x).astype(np.int64)

    target = np.full(n, LOCAL, dtype=np.int64)
    cloud = np.full(n, -1, dtype=np.int64)
    net_i = np.zeros(n)
    chosen = np.flatnonzero(x[ox : ox + n_pairs])
    target[pi[chosen]] = pj[chosen]
    net_i[pi[chosen]] = net[pi[chosen], pj[chosen]]
    in_cloud = ci[np.flatnonzero(x[oz : oz + n_cloud])]
    target[in_cloud] = CLOUD
    cloud[in_cloud] = cloud_k[in_cloud]
    net_i[in_cloud] = cloud_net[in_cloud]

    loads = np.bincount(target[target >= 0], minlength=m).astype(np.int64)
    q_final = np.maximum(0.0, infra.slope_ms * loads + infra.intercept_ms)
    q_final[loads == 0] = 0.0
    latency = devices.local_ms.copy()
    energy = devices.local_mj.copy()
    edge = target >= 0
    latency[edge] = net_i[edge] + infra.compute_ms[target[edge]] + q_final[target[edge]]
    latency[target == CLOUD] = net_i[target == CLOUD] + infra.cloud_inference_ms
    off = target != LOCAL
    energy[off] = net_i[off] * devices.tx_power[off]
    return Allocation(
        method=f"exact-{objective}",
        target=target,
        cloud=cloud,
        latency_ms=latency,
        energy_mj=energy,
        local_ms=devices.local_ms.copy(),
        local_mj=devices.local_mj.copy(),
        loads=loads,
        maxload=maxload,
        convergence_s=time.perf_counter() - t0,
        extra={"objective": float(res.fun), "n_pairs": float(n_pairs)},
    )
