"""Property tests: every method, on random small instances, respects the constraints."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_checks import check_allocation

from fades.placement.baselines import RULE_BASELINES, run_baseline
from fades.placement.model import Devices, Infrastructure
from fades.placement.nimbus import NimbusParams, solve
from fades.placement.variants import SolverPool, solve_2pmt, solve_mt


@st.composite
def instances(draw: st.DrawFn) -> tuple[Infrastructure, Devices]:
    a = draw(st.integers(1, 4))
    m = draw(st.integers(0, 6))
    n = draw(st.integers(0, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rtt = rng.uniform(0, 80, (a, m))
    rtt[rng.random((a, m)) < 0.15] = np.inf  # some nodes unreachable from some APs
    infra = Infrastructure(
        tier=rng.integers(0, 3, m).astype(np.int64),
        slope_ms=rng.uniform(0.5, 25, m),
        intercept_ms=rng.uniform(-40, 5, m),
        compute_ms=rng.uniform(1, 30, m),
        node_bw_mbps=rng.uniform(20, 1000, m),
        rtt_ms=rtt,
        wifi_mbps=rng.uniform(50, 300, a),
        cloud_rtt_ms=rng.uniform(5, 90, (a, draw(st.integers(0, 3)))),
        cloud_inference_ms=5.0,
    )
    local_mj = rng.uniform(5, 300, n)
    devices = Devices(
        ap=rng.integers(0, a, n).astype(np.int64),
        phone=np.zeros(n, dtype=np.int64),
        data_kb=rng.uniform(1, 60, n),
        eps_t_ms=rng.uniform(30, 100, n),
        eps_b_mj=local_mj,
        tx_power=rng.uniform(0.5, 2.5, n),
        local_ms=rng.uniform(80, 200, n),
        local_mj=local_mj,
    )
    return infra, devices


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.integers(0, 3), st.floats(0, 1))
def test_nimbus_never_breaks_eps_t_eps_b_or_maxload(
    inst: tuple[Infrastructure, Devices], kappa: int, alpha: float
) -> None:
    infra, devices = inst
    al = solve(infra, devices, NimbusParams(alpha=alpha, beta=1 - alpha, kappa=kappa), rng=0)
    check_allocation(al, infra, devices)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_every_rule_baseline_respects_the_same_constraints(
    inst: tuple[Infrastructure, Devices],
) -> None:
    infra, devices = inst
    for name in RULE_BASELINES:
        check_allocation(run_baseline(name, infra, devices, rng=1), infra, devices)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(instances())
def test_mt_and_2pmt_respect_the_constraints_and_2pmt_only_adds_edge_devices(
    pool2: SolverPool, inst: tuple[Infrastructure, Devices]
) -> None:
    infra, devices = inst
    mt = solve_mt(infra, devices, 2, pool=pool2)
    two = solve_2pmt(infra, devices, 2, pool=pool2)
    check_allocation(mt, infra, devices)
    check_allocation(two, infra, devices)
    # The second pass starts from MT's allocation and only moves devices onto edge nodes.
    assert np.all(two.target[mt.target >= 0] == mt.target[mt.target >= 0])
    assert two.edge_ratio >= mt.edge_ratio


@settings(max_examples=25, deadline=None)
@given(instances())
def test_exact_solution_is_feasible(inst: tuple[Infrastructure, Devices]) -> None:
    from fades.placement.baselines import solve_exact

    infra, devices = inst
    check_allocation(solve_exact(infra, devices), infra, devices)
