"""ST / MT / 2PMT: slicing, real worker processes, and what the second pass recovers."""

from __future__ import annotations

import numpy as np
import pytest

from fades.errors import PlacementError
from fades.placement.config import InfraSize, NimbusConfig
from fades.placement.generator import generate_devices, generate_infrastructure
from fades.placement.model import Devices, Infrastructure
from fades.placement.variants import SolverPool, partition, solve_2pmt, solve_mt, solve_st

CFG = NimbusConfig()


def _problem(seed: int = 0, n: int = 1500) -> tuple[Infrastructure, Devices]:
    infra = generate_infrastructure(InfraSize(name="D", t1=100, t2=50, t3=2), CFG, seed)
    return infra, generate_devices(n, infra, CFG, seed + 1)


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_partition_is_non_overlapping_and_keeps_t1_with_its_access_points(k: int) -> None:
    infra, _ = _problem()
    slices = partition(infra, k)
    nodes = np.concatenate([s.nodes for s in slices])
    aps = np.concatenate([s.aps for s in slices])
    assert sorted(nodes.tolist()) == list(range(infra.n_nodes))
    assert sorted(aps.tolist()) == list(range(infra.n_aps))
    for s in slices:
        home = infra.home_ap_t1[s.aps]
        assert set(home[home >= 0].tolist()) <= set(s.nodes.tolist())
    # Two T3 nodes over eight slices: at most one each, as in the paper.
    t3_per_slice = [int(np.sum(infra.tier[s.nodes] == 2)) for s in slices]
    assert max(t3_per_slice) == (2 if k == 1 else 1)
    with pytest.raises(PlacementError):
        partition(infra, 0)


def test_mt_with_one_worker_equals_st() -> None:
    infra, devices = _problem()
    st = solve_st(infra, devices, rng=0)
    mt = solve_mt(infra, devices, 1, seed=0)
    assert np.array_equal(st.target, mt.target)
    assert np.allclose(st.latency_ms, mt.latency_ms)


def test_mt_runs_each_slice_in_its_own_process(pool2: SolverPool) -> None:
    infra, devices = _problem()
    mt = solve_mt(infra, devices, 2, pool=pool2)
    assert mt.extra["processes"] == 2.0
    assert mt.extra["pool_startup_s"] == 0.0  # the shared pool was already warm
    with pytest.raises(PlacementError):
        solve_mt(infra, devices, 3, pool=pool2)


def test_mt_without_a_pool_reports_its_start_up_cost() -> None:
    infra, devices = _problem(n=200)
    mt = solve_mt(infra, devices, 2)
    assert mt.extra["pool_startup_s"] > 0.0
    assert mt.extra["processes"] == 2.0


def test_more_slices_lose_allocations_and_2pmt_recovers_them(pool2: SolverPool) -> None:
    # The paper's variant setting: 100/50/2 nodes, 10 fps (eps_t = 100 ms).
    infra = generate_infrastructure(InfraSize(name="D", t1=100, t2=50, t3=2), CFG, 3)
    devices = generate_devices(1000, infra, CFG, 4, fps=10)
    st = solve_st(infra, devices)
    mt8 = solve_mt(infra, devices, 8, seed=0)
    two8 = solve_2pmt(infra, devices, 8, seed=0)
    assert mt8.edge_ratio < st.edge_ratio
    assert two8.edge_ratio > mt8.edge_ratio
    assert two8.extra["recovered"] == pytest.approx((two8.edge_ratio - mt8.edge_ratio) * devices.n)
    two2 = solve_2pmt(infra, devices, 2, seed=0, pool=pool2)
    assert two2.edge_ratio >= solve_mt(infra, devices, 2, seed=0, pool=pool2).edge_ratio
