"""Hand-computed small cases for Nimbus's warm-up, core and fallback.

Shared numbers: 25 KB over a 100 Mbps Wi-Fi share takes 8*25/100 = 2 ms. Node 0 is a slow
"T1" node (q(c) = max(0, 10c - 10), 20 ms compute), node 1 a fast "T3" node
(q(c) = max(0, c - 5), 5 ms compute). eps_t = 50 ms, w = 1 mJ/ms.
"""

from __future__ import annotations

import numpy as np
import pytest
from placement_builders import make_devices, make_infra

from fades.placement.model import CLOUD, LOCAL, QueueModel
from fades.placement.nimbus import NimbusParams, Rule, solve

TWO_NODES = {"slope": [10.0, 1.0], "intercept": [-10.0, -5.0], "compute": [20.0, 5.0]}


def test_queue_model_inverts_the_published_triton_fits() -> None:
    eps = 1000.0 / 15
    # (66.67 - 22.6 + 41.5) / 23.3 = 3.67; (66.67 - 7.2 + 11.6) / 7.09 = 10.02;
    # (66.67 - 5.2 + 11.9) / 0.656 = 111.8
    assert QueueModel(23.3, -41.5, 22.6).max_clients(eps) == 3
    assert QueueModel(7.09, -11.6, 7.2).max_clients(eps) == 10
    assert QueueModel(0.656, -11.9, 5.2).max_clients(eps) == 111
    tx2 = QueueModel(23.3, -41.5, 22.6)
    assert tx2.queue_ms(0) == 0.0
    assert tx2.queue_ms(1) == 0.0  # 23.3 - 41.5 < 0
    assert tx2.queue_ms(3) == pytest.approx(28.4)
    assert tx2.service_ms(3) == pytest.approx(51.0)
    assert QueueModel(10.0, 0.0, 60.0).max_clients(50.0) == 0


def test_single_device_picks_the_lowest_score_and_records_its_costs() -> None:
    # node 0: net 2+5 = 7, L = 7+20+q(1)=27, score 0.7*27/50 + 0.3*0/4 = 0.378
    # node 1: net 2+30 = 32, L = 32+5+0 = 37, score 0.7*37/50 = 0.518
    infra = make_infra([[5.0, 30.0]], **TWO_NODES)
    al = solve(infra, make_devices([0], local_mj=200.0))
    assert al.target.tolist() == [0]
    assert al.latency_ms[0] == pytest.approx(27.0)
    assert al.energy_mj[0] == pytest.approx(7.0)
    assert al.saved_mj[0] == pytest.approx(193.0)
    assert al.maxload.tolist() == [4, 50]  # (50-20+10)/10 and (50-5+5)/1


def test_load_term_spreads_devices_across_nodes() -> None:
    # Three devices share one AP with 300 Mbps -> 100 Mbps each, 2 ms transfer.
    # Device 2: node 0 L = 7+20+q(2)=37, score 0.7*37/50 + 0.3*1/4 = 0.593;
    #           node 1 L = 37, score 0.518 -> node 1.
    # Device 3: node 1 score 0.518 + 0.3*1/50 = 0.524 < 0.593 -> node 1.
    infra = make_infra([[5.0, 30.0]], wifi=[300.0], **TWO_NODES)
    al = solve(infra, make_devices([0, 0, 0]))
    assert al.target.tolist() == [0, 1, 1]
    assert al.loads.tolist() == [1, 2]
    assert al.latency_ms.tolist() == pytest.approx([27.0, 37.0, 37.0])


def test_greedy_without_load_term_stacks_the_same_node() -> None:
    # Greedy minimises latency only: device 2 sees node 0 at 37 ms vs node 1 at 37 ms
    # (tie, first wins); make node 0 slightly better and greedy stacks it.
    infra = make_infra([[4.0, 30.0]], wifi=[300.0], **TWO_NODES)
    al = solve(infra, make_devices([0, 0]), NimbusParams(rule=Rule.GREEDY, alpha=1, beta=0))
    assert al.target.tolist() == [0, 0]
    nimbus = solve(infra, make_devices([0, 0]))
    assert nimbus.target.tolist() == [0, 1]


def test_allocation_updates_queue_time_of_clients_already_on_the_node() -> None:
    # One node only: device 1 alone sees 27 ms; after device 2 joins q(2) = 10 ms.
    infra = make_infra([[5.0]], wifi=[200.0], slope=[10.0], intercept=[-10.0], compute=[20.0])
    al = solve(infra, make_devices([0, 0]))
    assert al.target.tolist() == [0, 0]
    assert al.latency_ms.tolist() == pytest.approx([37.0, 37.0])


def test_lookahead_protects_the_worst_placed_client() -> None:
    # Device A (AP 1, RTT 25): net 27, L 47 < 50, slack 50-27 = 23.
    # Device B (AP 0, RTT 5): core alone would accept (L = 7+20+10 = 37), but the node's
    # service time with two clients, 30 ms, exceeds A's slack of 23 -> B goes to the cloud
    # (net 2 + 10 = 12, L = 17).
    infra = make_infra(
        [[5.0], [25.0]],
        slope=[10.0],
        intercept=[-10.0],
        compute=[20.0],
        cloud_rtt=[[10.0], [10.0]],
    )
    devices = make_devices([1, 0])
    al = solve(infra, devices)
    assert al.target.tolist() == [0, CLOUD]
    assert al.latency_ms.tolist() == pytest.approx([47.0, 17.0])
    # Without the look-ahead the same instance breaks device A's bound.
    reckless = solve(infra, devices, NimbusParams(lookahead=False))
    assert reckless.target.tolist() == [0, 0]
    assert reckless.latency_ms[0] == pytest.approx(57.0) and reckless.latency_ms[0] > 50.0


def test_filter_drops_nodes_whose_rtt_reaches_eps_t() -> None:
    infra = make_infra([[50.0]], slope=[1.0], intercept=[0.0], compute=[0.0])
    al = solve(infra, make_devices([0]))
    assert al.target.tolist() == [LOCAL]


def test_energy_bound_sends_device_local_when_every_transfer_costs_too_much() -> None:
    # Edge transfer 7 mJ and cloud transfer 12 mJ both exceed eps_b = 5 mJ.
    infra = make_infra([[5.0]], cloud_rtt=[[10.0]], slope=[10.0], intercept=[-10.0], compute=[20.0])
    al = solve(infra, make_devices([0], eps_b=5.0, local_ms=150.0, local_mj=200.0))
    assert al.target.tolist() == [LOCAL]
    assert al.latency_ms[0] == 150.0 and al.energy_mj[0] == 200.0 and al.saved_mj[0] == 0.0


def test_fallback_takes_the_closest_cloud_with_constant_inference() -> None:
    infra = make_infra(
        [[60.0]],
        cloud_rtt=[[30.0, 12.0, 40.0]],
        slope=[1.0],
        intercept=[0.0],
        compute=[1.0],
        cloud_inference=5.0,
    )
    al = solve(infra, make_devices([0]))
    assert al.target.tolist() == [CLOUD]
    assert al.cloud.tolist() == [1]
    assert al.latency_ms[0] == pytest.approx(2.0 + 12.0 + 5.0)
    assert al.describe(0) == "cloud:1"


def test_kappa_samples_a_random_subset_of_the_candidates() -> None:
    infra = make_infra([[5.0, 5.0, 5.0]], slope=[1.0] * 3, intercept=[0.0] * 3, compute=[1.0] * 3)
    chosen = {
        int(solve(infra, make_devices([0]), NimbusParams(kappa=1), rng=s).target[0])
        for s in range(30)
    }
    assert chosen == {0, 1, 2}  # with kappa = 0 the tie would always go to node 0
    assert {int(solve(infra, make_devices([0]), rng=s).target[0]) for s in range(5)} == {0}


def test_order_and_state_place_only_the_requested_devices() -> None:
    infra = make_infra([[5.0]], slope=[1.0], intercept=[0.0], compute=[1.0])
    al = solve(infra, make_devices([0, 0, 0]), order=[2])
    assert al.target.tolist() == [LOCAL, LOCAL, 0]
    assert np.array_equal(al.loads, [1])
