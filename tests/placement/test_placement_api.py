"""The live-candidates API: golden decisions, reasons, and agreement with the engine."""

from __future__ import annotations

import numpy as np
import pytest

from fades.errors import PlacementError
from fades.placement.api import Candidate, CloudOption, Request, choose
from fades.placement.config import InfraSize, NimbusConfig
from fades.placement.generator import generate_devices, generate_infrastructure
from fades.placement.model import QueueModel
from fades.placement.nimbus import NimbusParams, PlacementState, place_one

SLOW = QueueModel(10.0, -10.0, 20.0)
FAST = QueueModel(1.0, -5.0, 5.0)
REQ = Request(
    data_kb=25.0,
    eps_t_ms=50.0,
    eps_b_mj=100.0,
    tx_power_mj_per_ms=1.0,
    local_ms=150.0,
    local_mj=200.0,
)


def test_choose_returns_the_published_score_of_the_best_node() -> None:
    # slow: L = 2+5+20 = 27, score 0.378; fast: L = 2+30+5 = 37, score 0.518.
    choice = choose(
        [Candidate("slow", 5.0, 0, SLOW, 100.0), Candidate("fast", 30.0, 0, FAST, 100.0)], REQ
    )
    assert (choice.kind, choice.target) == ("edge", "slow")
    assert choice.score == pytest.approx(0.7 * 27 / 50)
    assert choice.latency_ms == pytest.approx(27.0)
    assert choice.energy_mj == pytest.approx(7.0)
    assert choice.saved_mj == pytest.approx(193.0)
    assert choice.rejected == {"fast": "higher score"}


def test_load_changes_the_choice() -> None:
    # slow with 1 client: L = 7+20+q(2)=37, score 0.7*37/50 + 0.3*1/4 = 0.593 > 0.518.
    choice = choose(
        [Candidate("slow", 5.0, 1, SLOW, 100.0), Candidate("fast", 30.0, 0, FAST, 100.0)], REQ
    )
    assert choice.target == "fast"
    assert choice.score == pytest.approx(0.7 * 37 / 50)


def test_reasons_name_every_warm_up_and_core_rejection() -> None:
    cands = [
        Candidate("far", 50.0, 0, FAST, 100.0),
        Candidate("unreachable", float("inf"), 0, FAST, 100.0),
        Candidate("queued", 5.0, 7, SLOW, 100.0),  # q(7) = 60 >= 50
        Candidate("lookahead", 5.0, 1, SLOW, 100.0, worst_slack_ms=25.0),  # 20+q(2)=30 > 25
        Candidate("too-slow", 20.0, 2, SLOW, 100.0),  # L = 22 + 20 + q(3)=20 -> 62
    ]
    choice = choose(cands, REQ, [CloudOption("eu", 10.0, 100.0), CloudOption("us", 80.0, 100.0)])
    assert (choice.kind, choice.target) == ("cloud", "eu")
    assert choice.latency_ms == pytest.approx(2.0 + 10.0 + 5.0)
    assert choice.rejected["far"].startswith("rtt")
    assert choice.rejected["unreachable"].startswith("rtt")
    assert choice.rejected["queued"].startswith("queue")
    assert choice.rejected["lookahead"].startswith("look-ahead")
    assert choice.rejected["too-slow"].startswith("latency")


def test_local_when_nothing_meets_the_energy_bound() -> None:
    req = Request(25.0, 50.0, eps_b_mj=1.0, local_ms=150.0, local_mj=200.0)
    choice = choose([Candidate("a", 5.0, 0, FAST, 100.0)], req, [CloudOption("c", 5.0, 100.0)])
    assert choice.kind == "local" and choice.target is None
    assert choice.latency_ms == 150.0 and choice.saved_mj == 0.0
    assert choice.rejected["a"].startswith("energy")


def test_kappa_limits_the_candidates() -> None:
    cands = [Candidate(f"n{k}", 5.0, 0, FAST, 100.0) for k in range(5)]
    choice = choose(cands, REQ, kappa=2, rng=0)
    assert sum(r == "not in the random kappa subset" for r in choice.rejected.values()) == 3


@pytest.mark.parametrize(
    "bad",
    [
        [Candidate("a", -1.0, 0, FAST, 100.0)],
        [Candidate("a", 1.0, 0, FAST, 0.0)],
        [Candidate("a", 1.0, 0, FAST, 1.0), Candidate("a", 2.0, 0, FAST, 1.0)],
    ],
)
def test_malformed_candidates_raise_placement_error(bad: list[Candidate]) -> None:
    with pytest.raises(PlacementError):
        choose(bad, REQ)


def test_api_agrees_with_the_batch_engine_decision_by_decision() -> None:
    cfg = NimbusConfig()
    infra = generate_infrastructure(InfraSize(name="t", t1=10, t2=5, t3=1), cfg, 5)
    devices = generate_devices(120, infra, cfg, 6)
    state = PlacementState(infra, devices, float(devices.eps_t_ms.max()))
    params, rng = NimbusParams(), np.random.default_rng(0)
    for i in range(devices.n):
        a = int(devices.ap[i])
        cands = [
            Candidate(
                node_id=str(j),
                rtt_ms=float(infra.rtt_ms[a, j]),
                load=int(state.load[j]),
                queue=infra.queue_model(j),
                bandwidth_mbps=min(float(state.wifi_share[a]), float(infra.node_bw_mbps[j])),
                worst_slack_ms=float(state.min_slack[j]) if state.load[j] else None,
                maxload=int(state.maxload[j]),
            )
            for j in range(infra.n_nodes)
        ]
        clouds = [
            CloudOption(str(k), float(infra.cloud_rtt_ms[a, k]), float(state.wifi_share[a]))
            for k in range(infra.n_clouds)
        ]
        req = Request(
            float(devices.data_kb[i]),
            float(devices.eps_t_ms[i]),
            float(devices.eps_b_mj[i]),
            float(devices.tx_power[i]),
        )
        choice = choose(cands, req, clouds)
        place_one(state, i, params, rng)
        t = int(state.target[i])
        expected = (
            ("edge", str(t))
            if t >= 0
            else ("cloud", str(int(state.cloud[i])))
            if t == -1
            else ("local", None)
        )
        assert (choice.kind, choice.target) == expected, i
