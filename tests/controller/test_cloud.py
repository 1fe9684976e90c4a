"""The cloud path: raw data pulled from the node over the fabric, the same function run in the
controller; it must agree with the edge and report where its time went."""

from __future__ import annotations

import time
from typing import Any

from fades.functions.artifact import Artifact

from .conftest import VISITOR, Bed
from .test_api import POLICY, artifact_of, up

STATS = """
def main(data, params):
    out = {}
    for name, ds in data.items():
        vals = list(ds.values)
        out[name] = {"n": len(vals), "min": min(vals), "max": max(vals),
                     "mean": sum(vals) / len(vals), "scale": params.get("scale")}
    return out
"""

CLOUD_TIMING = {
    "queue",
    "retrieval",
    "node_retrieval",
    "transfer",
    "start",
    "compute",
    "result",
    "total",
    "latency",
}


def test_the_cloud_path_returns_the_edge_result_with_a_timing_breakdown(
    bed: Bed, prepare_home: Any, make_task: Any, runtime_artifact: Artifact
) -> None:
    home = prepare_home("edge", functions={"stats": STATS}, policy=POLICY)
    bed.start_controller()
    agent = bed.agent("edge", home)
    queries = bed.listen("fades.node.edge.query")
    up(bed, "edge")
    with bed.client() as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(artifact_of(home, "stats"))
        data = [
            {"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}},
            {"name": "h", "select": {"location": "room1", "sensor_type": "humidity"}},
        ]
        edge = c.submit(make_task("stats", data=data, memory_mib=64, params={"scale": 2}))
        cloud = c.submit(
            make_task("stats", data=data, memory_mib=64, params={"scale": 2}), where="cloud"
        )
        assert edge["where"] == "edge" and cloud["where"] == "cloud"
        assert cloud["node"] == "edge" and cloud["placement"].startswith("cloud run on data from")
        ei = c.wait(edge["task_id"], timeout=60)
        ki = c.wait(cloud["task_id"], timeout=60)

    assert ei["status"] == "done", ei
    assert ki["status"] == "done", ki
    e, k = ei, ki
    assert e["node"] == k["node"] == "edge" and k["where"] == "cloud"
    assert k["digest"] == e["digest"] and k["digest"].startswith("sha256:")

    assert k["result"] == e["result"]
    assert k["result"]["t"]["n"] > 0 and k["result"]["t"]["scale"] == 2
    assert set(k["timing"]) >= CLOUD_TIMING, k["timing"]
    t = k["timing"]
    assert t["retrieval"] >= t["node_retrieval"] > 0
    parts = t["retrieval"] + t["transfer"] + t["start"] + t["compute"] + t["result"]
    assert parts <= t["total"] * 1.01 + 1e-3
    assert k["bytes_read"] == e["bytes_read"] > 0
    # the cloud pulled the raw data upstream; the edge sent only its result
    assert ki["bytes_uplink"] > e["bytes_read"] > ei["bytes_uplink"] > 0
    assert len(queries) == 1 and agent.counters["received"] == 1


def test_the_node_policy_applies_to_the_cloud_path(
    bed: Bed, prepare_home: Any, make_task: Any, runtime_artifact: Artifact
) -> None:
    home = prepare_home("edge", functions={"stats": STATS}, policy=POLICY)
    bed.start_controller()
    bed.agent("edge", home)
    queries = bed.listen("fades.node.edge.query")
    up(bed, "edge")
    with bed.client(VISITOR) as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(artifact_of(home, "stats"))
        co2_op = {"name": "c", "select": {"location": "room1", "sensor_type": "co2"}}
        co2 = make_task("stats", tenant="visitor", memory_mib=64, data=[co2_op])
        t0 = time.monotonic()
        info = c.wait(c.submit(co2, node="edge", where="cloud")["task_id"], timeout=30)
    # the node's broker refused the query: no data left the node
    out = info
    assert info["status"] == "failed" and out["error_kind"] == "AccessDenied", info
    assert "visitor" in out["error"] and time.monotonic() - t0 < 10
    assert len(queries) == 1 and info["bytes_uplink"] == 0
