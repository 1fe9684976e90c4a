"""The exact milp optimum: checked by brute force, and never beaten by a heuristic."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from placement_builders import make_devices, make_infra
from placement_checks import check_allocation

from fades.placement.baselines import RULE_BASELINES, run_baseline, solve_exact, total_latency
from fades.placement.config import InfraSize, NimbusConfig
from fades.placement.generator import generate_devices, generate_infrastructure
from fades.placement.model import CLOUD, LOCAL, Devices, Infrastructure
from fades.placement.nimbus import solve


def brute_force(infra: Infrastructure, devices: Devices) -> tuple[float, int]:
    """Best (total latency) and most edge devices over every feasible assignment."""
    share = infra.wifi_mbps / np.maximum(np.bincount(devices.ap, minlength=infra.n_aps), 1)
    maxload = infra.maxload(float(devices.eps_t_ms.max()))
    options = [*range(infra.n_nodes), CLOUD, LOCAL]
    best, most_edge = np.inf, 0
    for combo in itertools.product(options, repeat=devices.n):
        t = np.array(combo)
        loads = np.bincount(t[t >= 0], minlength=infra.n_nodes)
        if np.any(loads > maxload):
            continue
        total, ok = 0.0, True
        for i, ti in enumerate(combo):
            a = int(devices.ap[i])
            if ti == LOCAL:
                total += devices.local_ms[i]
                continue
            if ti == CLOUD:
                k = int(np.argmin(infra.cloud_rtt_ms[a]))
                net = 8 * devices.data_kb[i] / share[a] + infra.cloud_rtt_ms[a, k]
                lat = net + infra.cloud_inference_ms
            else:
                bw = min(share[a], infra.node_bw_mbps[ti])
                net = 8 * devices.data_kb[i] / bw + infra.rtt_ms[a, ti]
                q = max(0.0, infra.slope_ms[ti] * loads[ti] + infra.intercept_ms[ti])
                lat = net + infra.compute_ms[ti] + q
            if lat > devices.eps_t_ms[i] or net * devices.tx_power[i] > devices.eps_b_mj[i]:
                ok = False
                break
            total += lat
        if ok:
            best = min(best, total)
            most_edge = max(most_edge, int(np.sum(t >= 0)))
    return float(best), most_edge


@pytest.mark.parametrize("seed", range(6))
def test_milp_matches_brute_force_on_tiny_instances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    infra = make_infra(
        rng.uniform(2, 40, (2, 2)),
        slope=rng.uniform(3, 12, 2),
        intercept=rng.uniform(-12, 0, 2),
        compute=rng.uniform(5, 20, 2),
        cloud_rtt=rng.uniform(10, 60, (2, 1)),
    )
    devices = make_devices(rng.integers(0, 2, 5).tolist(), eps_t=50.0)
    best, most_edge = brute_force(infra, devices)
    lat = solve_exact(infra, devices)
    edge = solve_exact(infra, devices, objective="edge")
    check_allocation(lat, infra, devices)
    check_allocation(edge, infra, devices)
    assert total_latency(lat) == pytest.approx(best)
    assert int(np.sum(edge.target >= 0)) == most_edge


def test_milp_golden_prefers_cloud_when_it_is_faster_than_the_edge() -> None:
    # Edge: 2 + 5 + 20 = 27 ms; cloud: 2 + 10 + 5 = 17 ms. Nimbus, edge-first as published,
    # takes the edge node; the latency optimum takes the cloud; the edge optimum the node.
    infra = make_infra([[5.0]], slope=[10.0], intercept=[-10.0], compute=[20.0], cloud_rtt=[[10.0]])
    devices = make_devices([0])
    assert solve(infra, devices).target.tolist() == [0]
    assert solve_exact(infra, devices).target.tolist() == [CLOUD]
    assert solve_exact(infra, devices, objective="edge").target.tolist() == [0]


@pytest.mark.parametrize("seed", range(4))
def test_no_heuristic_beats_the_optimum_on_generated_instances(seed: int) -> None:
    cfg = NimbusConfig()
    infra = generate_infrastructure(InfraSize(name="s", t1=3, t2=2, t3=1), cfg, seed)
    devices = generate_devices(40, infra, cfg, seed + 100)
    opt_lat = total_latency(solve_exact(infra, devices))
    opt_edge = int(np.sum(solve_exact(infra, devices, objective="edge").target >= 0))
    methods = [solve(infra, devices)] + [
        run_baseline(b, infra, devices, rng=seed) for b in RULE_BASELINES
    ]
    for al in methods:
        assert total_latency(al) >= opt_lat - 1e-6, al.method
        assert int(np.sum(al.target >= 0)) <= opt_edge, al.method
