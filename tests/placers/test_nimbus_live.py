"""The live Nimbus placer as a pure rule: scoring, hysteresis, the device, locality, the
explanation, and its decision time with 100 registered nodes."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from typing import Any

import pytest

from fades.errors import NoPlacement
from fades.fabric.protocol import DataHeld, NodeInfo, NodeLoad
from fades.placers import LabelEstimates, NimbusPlacer, NodeEstimate
from fades.placers.estimates import fluid_queue
from fades.task import Task, parse_task


def est(rtt: float, compute: float = 10.0, clients: int = 0, workers: int = 1) -> NodeEstimate:
    slope, intercept = fluid_queue(compute, workers)
    return NodeEstimate(rtt, 1000.0, compute, slope, intercept, clients, workers, source="test")


class Table:
    """Estimates from a table the test sets (what the controller would have measured)."""

    def __init__(self, nodes: dict[str, NodeEstimate], cloud: NodeEstimate | None = None):
        self.nodes = nodes
        self.cloud_est = cloud

    def node(self, info: NodeInfo, artifact: str) -> NodeEstimate:
        return self.nodes[info.name]

    def cloud(self, artifact: str) -> NodeEstimate | None:
        return self.cloud_est


def held(room: str) -> DataHeld:
    now = time.time()
    return DataHeld(
        connector="sqlite",
        location=room,
        sensor_type="temperature",
        rows=10,
        first_ts=now - 3600,
        last_ts=now,
    )


def info(name: str, *rooms: str, capacity: int = 1) -> NodeInfo:
    return NodeInfo(name=name, data=[held(r) for r in rooms], load=NodeLoad(capacity=capacity))


def compute_task(device: dict[str, Any] | None = None, frame: int = 0, **fn: Any) -> Task:
    raw: dict[str, Any] = {
        "credentials": {"tenant": "t"},
        "inputs": {"frame": "x" * frame},
        "function": {"artifact": "detect", **fn},
    }
    if device is not None:
        raw["device"] = device
    return parse_task(raw)


def data_task(room: str) -> Task:
    return parse_task(
        {
            "credentials": {"tenant": "t"},
            "data": [{"name": "t", "select": {"location": room}}],
            "function": {"artifact": "detect"},
        }
    )


PHONE = {"name": "phone1", "local_latency_ms": 154, "local_energy_mj": 182, "uplink_mbps": 50}


def test_the_lower_predicted_latency_wins_and_every_part_is_explained() -> None:
    nodes = [info("far"), info("near")]
    table = Table({"far": est(rtt=40), "near": est(rtt=5)})
    p = NimbusPlacer(estimates=table).place(compute_task(), nodes)
    assert (p.node, p.where) == ("near", "edge")
    d = p.decision
    assert d is not None and d["target"] == "near" and d["placer"] == "nimbus"
    by = {c["target"]: c for c in d["candidates"]}
    assert by["near"]["latency_ms"] == pytest.approx(15.0, abs=0.01)  # 5 rtt + 10 compute
    assert by["far"]["latency_ms"] == pytest.approx(50.0, abs=0.01)
    assert by["near"]["score"] < by["far"]["score"]
    assert set(by["near"]["parts_ms"]) == {"device", "rtt", "transfer", "queue", "compute"}
    # queue time from the node's clients: a busy near node loses to the idle far one
    table.nodes["near"] = est(rtt=5, clients=6)  # 6 ahead, 1 worker: 60 ms of queue
    p = NimbusPlacer(estimates=table).place(compute_task(), nodes)
    assert p.node == "far"
    near = next(c for c in p.decision["candidates"] if c["target"] == "near")  # type: ignore[index]
    assert near["parts_ms"]["queue"] == pytest.approx(60.0)


def test_transfer_time_follows_the_input_size_and_the_bandwidth() -> None:
    thin = replace(est(rtt=1), bandwidth_mbps=1.0)  # 100 KB at 1 Mbit/s: 800 ms
    fat = replace(est(rtt=20), bandwidth_mbps=1000.0)
    table = Table({"thin": thin, "fat": fat})
    nodes = [info("thin"), info("fat")]
    assert NimbusPlacer(estimates=table).place(compute_task(frame=0), nodes).node == "thin"
    big = NimbusPlacer(estimates=table).place(compute_task(frame=100_000), nodes)
    assert big.node == "fat"
    thin_c = next(c for c in big.decision["candidates"] if c["target"] == "thin")  # type: ignore[index]
    assert thin_c["parts_ms"]["transfer"] == pytest.approx(800.0, rel=0.01)


def test_hysteresis_holds_under_small_wiggles_and_switches_on_a_large_change() -> None:
    nodes = [info("a"), info("b")]
    table = Table({"a": est(rtt=10), "b": est(rtt=12)})
    placer = NimbusPlacer(estimates=table, eps_t_ms=100.0)
    assert placer.place(compute_task(), nodes).node == "a"
    # b now looks a little better (up to 2.5 ms of 100: a score difference <= 0.0175 < 0.05): stay
    for wiggle in (9.0, 8.0, 9.5, 7.5):
        table.nodes["b"] = est(rtt=wiggle)
        p = placer.place(compute_task(), nodes)
        assert p.node == "a", (wiggle, p.decision)
        assert p.decision is not None and "kept a" in p.decision["hysteresis"]
    # without hysteresis the same figures flip the decision
    fresh = NimbusPlacer(estimates=table, eps_t_ms=100.0, margin=0.0)
    assert fresh.place(compute_task(), nodes).node == "b"
    # a large change (a's RTT +30 ms: score +0.21) switches, and the decision says so
    table.nodes["a"] = est(rtt=40)
    p = placer.place(compute_task(), nodes)
    assert p.node == "b" and "switched from a" in p.decision["hysteresis"]  # type: ignore[index]
    # a different function is not a "similar task": no stickiness carried over
    table.nodes["a"], table.nodes["b"] = est(rtt=10), est(rtt=11)
    assert placer.place(compute_task(), nodes).node == "b"  # sticks to b (11 vs 10 ms)
    assert placer.place(compute_task(time_budget_ms=100), nodes).node == "b"
    other = compute_task().model_copy(
        update={"function": compute_task().function.model_copy(update={"artifact": "other"})}
    )
    assert placer.place(other, nodes).node == "a"


def test_the_device_runs_it_when_offloading_is_slower_or_costs_more_energy() -> None:
    nodes = [info("edge1")]
    # a loaded node: 20 rtt + 10 compute + 8 queued tasks x 10 ms = 110 ms; phone: 154 ms
    table = Table({"edge1": est(rtt=20, clients=8)})
    p = NimbusPlacer(estimates=table).place(compute_task(PHONE, frame=33_000), nodes)
    assert p.where == "edge" and p.node == "edge1"
    assert p.decision is not None and p.decision["eps_b_mj"] == 182
    edge = p.decision["candidates"][0]
    # radio time 33 KB at 50 Mbit/s = 5.3 ms -> 1.21 W x 5.3 ms = 6.4 mJ
    assert edge["energy_mj"] == pytest.approx(1.21 * 33_000 * 8 / 50_000, rel=0.05)
    # more load: offloading is now slower than running locally -> run locally
    table.nodes["edge1"] = est(rtt=20, clients=14)
    p = NimbusPlacer(estimates=table).place(compute_task(PHONE, frame=33_000), nodes)
    assert (p.where, p.node) == ("device", "phone1")
    assert p.reason.startswith("nimbus: run locally, predicted 154.0 ms / 182.0 mJ")
    edge = next(c for c in p.decision["candidates"] if c["where"] == "edge")  # type: ignore[index]
    assert not edge["within_budget"] and edge["latency_ms"] > 154
    # a slow uplink: the radio would spend more than a local run (182 mJ) -> local
    slow = {**PHONE, "uplink_mbps": 1.0}  # 33 KB at 1 Mbit/s: 264 ms of radio, 319 mJ
    table.nodes["edge1"] = est(rtt=1)
    p = NimbusPlacer(estimates=table).place(compute_task(slow, frame=33_000), nodes)
    assert p.where == "device"
    # no node at all, a device declared: it still gets an answer
    p = NimbusPlacer(estimates=table).place(compute_task(PHONE), [])
    assert p.where == "device"


def test_the_cloud_is_a_candidate_for_compute_only_tasks_when_offered() -> None:
    table = Table({"edge1": est(rtt=5, clients=20)}, cloud=est(rtt=0, compute=15, workers=2))
    placer = NimbusPlacer(estimates=table, cloud=True)
    p = placer.place(compute_task(), [info("edge1", "room1")])
    assert (p.where, p.node) == ("cloud", "cloud")
    # a task reading a node's data never goes to the cloud (locality is a hard constraint)
    p = placer.place(data_task("room1"), [info("edge1", "room1")])
    assert p.node == "edge1" and "cloud" not in {c["target"] for c in p.decision["candidates"]}  # type: ignore[index]
    # not offered: not a candidate
    assert NimbusPlacer(estimates=table).place(compute_task(), [info("edge1")]).node == "edge1"


def test_only_holders_are_candidates_and_the_rejected_are_listed_with_the_reason() -> None:
    nodes = [info("close"), info("holder", "room1")]
    table = Table({"close": est(rtt=0), "holder": est(rtt=80)})
    down = [info("asleep", "room1")]
    p = NimbusPlacer(estimates=table).place(data_task("room1"), nodes, down)
    assert p.node == "holder" and "data locality" in p.reason
    d = p.decision
    assert d is not None and [c["target"] for c in d["candidates"]] == ["holder"]
    rejected = {r["target"]: r["reason"] for r in d["rejected"]}
    assert rejected == {"close": "does not hold the task's data", "asleep": "down"}
    # an unreachable site is rejected with the estimate's reason
    table.nodes["holder"] = replace(est(rtt=1), unreachable="no answer to 3 pings")
    with pytest.raises(NoPlacement, match="no answer to 3 pings"):
        NimbusPlacer(estimates=table).place(data_task("room1"), nodes)
    with pytest.raises(NoPlacement, match="asleep hold it but are down"):
        NimbusPlacer(estimates=table).place(data_task("room1"), [info("close")], down)


def test_a_site_past_its_capacity_says_so() -> None:
    table = Table({"a": est(rtt=1, compute=100, clients=30)})
    p = NimbusPlacer(estimates=table, eps_t_ms=500).place(compute_task(), [info("a")])
    cand = p.decision["candidates"][0]  # type: ignore[index]
    assert not cand["within_budget"] and cand["note"].startswith("at capacity: 30 task(s)")


def test_labels_are_the_fallback_figures() -> None:
    nodes = [
        NodeInfo(name="a", labels={"rtt_ms": "50"}),
        NodeInfo(name="b", labels={"rtt_ms": "2", "compute_ms": "5"}),
    ]
    p = NimbusPlacer(estimates=LabelEstimates()).place(compute_task(), nodes)
    assert p.node == "b" and p.decision["candidates"][0]["source"] == "labels"  # type: ignore[index]


def test_decision_time_with_100_registered_nodes_is_under_5_ms() -> None:
    nodes = [info(f"n{i:03d}", f"room{i % 10}", capacity=4) for i in range(100)]
    table = Table(
        {n.name: est(rtt=1 + i % 37, clients=i % 9, workers=4) for i, n in enumerate(nodes)}
    )
    placer = NimbusPlacer(estimates=table, cloud=True)
    table.cloud_est = est(rtt=0, compute=20, workers=2)
    tasks = [compute_task(PHONE, frame=2000), data_task("room3")]
    for t in tasks:  # warm up
        placer.place(t, nodes)
    times = []
    for k in range(200):
        t0 = time.perf_counter()
        placer.place(tasks[k % 2], nodes)
        times.append((time.perf_counter() - t0) * 1000)
    p50 = statistics.median(times)
    p95 = sorted(times)[int(0.95 * len(times))]
    # the bound is on a shared, loaded 2-core machine: the median must meet it
    assert p50 < 5.0, (p50, p95)
