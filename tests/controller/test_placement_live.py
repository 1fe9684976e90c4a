"""The Nimbus placer live: a real nats-server, the controller (``placer="nimbus"``) and real
node agents. Compute-only tasks are placed on a node, in the cloud or sent back to their
device; the decision is stored with the task and shown by the API and ``fades task get``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fades.controller.measure import Measurements
from fades.controller.store import ControllerStore
from fades.fabric.protocol import NodeInfo
from fades.functions.artifact import Artifact
from fades.functions.build import build_python
from fades.functions.keys import SigningKey
from fades.outcome import Outcome

from .conftest import FACILITIES, Bed
from .test_api import up

DOUBLE = """
def main(data, params):
    return {"twice": [2 * x for x in data["xs"]]}
"""


def compute_task(task_id: str, device: dict[str, Any] | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {
        "credentials": {"tenant": "facilities", "task_id": task_id},
        "inputs": {"xs": [1, 2, 3]},
        "function": {"artifact": "double", "memory_mib": 32},
    }
    if device is not None:
        task["device"] = device
    return task


def test_compute_only_tasks_placed_live_with_their_decision_in_the_api_and_the_cli(
    bed: Bed,
    tmp_path: Path,
    prepare_home: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
) -> None:
    ctl = bed.start_controller(down_after=5.0, placer="nimbus")
    for name in ("north", "south"):
        bed.agent(name, prepare_home(name, runtime=False, readings=False))
    up(bed, "north", "south")
    src = tmp_path / "src" / "double.py"
    src.parent.mkdir()
    src.write_text(DOUBLE)
    with bed.client() as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(build_python(src, key=signing_key).to_bytes())
        # the controller pings both nodes: an RTT is measured for each (a few seconds)
        deadline = time.monotonic() + 60
        while any(
            (s := ctl.measure.sites.get(n)) is None or s.srtt_ms is None for n in ("north", "south")
        ):
            assert time.monotonic() < deadline, "no RTT measured"
            time.sleep(0.05)

        r = c.submit(compute_task("c1"))
        assert r["where"] in ("edge", "cloud") and r["placement"].startswith("nimbus: ")
        info = c.wait("c1", timeout=120)
        assert info["status"] == "done", info
        assert info["result"] == {"twice": [2, 4, 6]}
        d = info["decision"]
        assert d["placer"] == "nimbus" and d["target"] == r["node"]
        targets = {x["target"] for x in d["candidates"]}
        assert targets == {"north", "south", "cloud"}, d
        north = next(x for x in d["candidates"] if x["target"] == "north")
        assert north["source"].startswith("measured") and north["parts_ms"]["rtt"] > 0

        # the outcome taught the measurements the function's compute time on that site
        site = "cloud" if r["where"] == "cloud" else r["node"]
        assert ctl.measure.sites[site].service_ms, ctl.measure.sites[site]

        # compute-only in the cloud on request: no data pull, the inputs are enough
        k = c.submit(compute_task("k1"), where="cloud")
        assert (k["where"], k["node"]) == ("cloud", "cloud")
        kinfo = c.wait("k1", timeout=120)
        assert kinfo["status"] == "done" and kinfo["result"] == {"twice": [2, 4, 6]}, kinfo
        assert kinfo["timing"]["node_retrieval"] == 0 and kinfo["bytes_uplink"] == 0

        # a device that runs it faster locally than any site can: "run locally"
        phone = {"name": "phone7", "local_latency_ms": 0.5, "local_energy_mj": 1.0,
                 "uplink_mbps": 10}  # fmt: skip
        local = c.submit(compute_task("l1", phone))
        assert (local["status"], local["where"], local["node"]) == ("local", "device", "phone7")
        assert "run locally" in local["placement"]
        linfo = c.get("l1")
        assert linfo["status"] == "local" and linfo["decision"]["where"] == "device"
        # nothing was dispatched for it, and the controller keeps serving
        assert c.submit(compute_task("c2"))["status"] == "accepted"
        assert c.wait("c2", timeout=120)["status"] == "done"

    # fades task get, as a subprocess, prints the decision table
    env = {**os.environ, "FADES_TOKEN": FACILITIES}
    for task_id, expect in (("c1", "placement decision (nimbus"), ("l1", "run locally")):
        out = subprocess.run(
            [sys.executable, "-m", "fades", "task", "get", task_id, "--controller", bed.url],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert expect in out.stdout and "north" in out.stdout, out.stdout


def test_the_queue_model_is_fit_to_observed_waits() -> None:
    m = Measurements()
    # a node with 2 workers and 100 ms tasks: the wait grows 50 ms per task beyond 2
    for k in range(12):
        c = 1 + k % 6
        m.placed("n1", "t", f"x{k}")
        m.inflight[("t", f"x{k}")] = ("n1", time.time(), c, 0)  # tasks there when placed
        wait = max(0.0, 0.05 * c - 0.1)
        m.observe(
            Outcome(
                task_id=f"x{k}", tenant="t", node="n1", status="done", digest="sha256:f",
                timing={"queue": wait, "total": 0.1},
            )
        )  # fmt: skip
    fit = m.sites["n1"].fit()
    assert fit is not None
    slope, intercept = fit
    assert abs(slope - 50.0) < 12 and intercept < 0, fit
    assert not m.inflight and m.count["n1"] == 0
    assert abs(m.sites["n1"].service_ms["sha256:f"] - 100.0) < 1e-6


def test_an_older_controller_db_gains_the_decision_column_and_device_tasks(
    tmp_path: Path,
) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "controller.db")
    db.executescript(
        """CREATE TABLE tasks_v2 (tenant TEXT NOT NULL, id TEXT NOT NULL,
        wire_id TEXT NOT NULL UNIQUE, node TEXT NOT NULL,
        location TEXT NOT NULL CHECK (location IN ('edge', 'cloud')), status TEXT NOT NULL,
        task TEXT NOT NULL, placement TEXT NOT NULL, digest TEXT, submitted_at REAL NOT NULL,
        dispatched_at REAL, PRIMARY KEY (tenant, id));
        INSERT INTO tasks_v2 VALUES ('t', 'old', 'old', 'n', 'edge', 'accepted', '{}', 'p',
        NULL, 1.0, NULL);"""
    )
    db.close()
    store = ControllerStore(tmp_path / "controller.db")
    try:
        assert store.get("old", "t").decision is None
        store.add_task("new", tenant="t", node="phone", where="device", task={}, placement="p",
                       submitted_at=2.0, decision={"where": "device"})  # fmt: skip
        rec = store.get("new", "t")
        assert (rec.status, rec.where, rec.decision) == ("local", "device", {"where": "device"})
    finally:
        store.close()


def test_pings_give_rtt_bandwidth_and_unreachability() -> None:
    import asyncio

    from fades.bus.memory import MemoryBus
    from fades.controller.measure import LOST_AFTER, PROBE_BYTES
    from fades.fabric.protocol import NodeLoad
    from fades.fabric.subjects import ping_subject

    async def go() -> None:
        bus = MemoryBus()
        info = NodeInfo(name="n1", load=NodeLoad(running=3, capacity=2))

        async def pong(data: bytes) -> bytes:  # 2 ms, plus the padding at 8 Mbit/s
            await asyncio.sleep(0.002 + len(data) * 8 / 8e6)
            return info.encode()

        await bus.serve(ping_subject("n1"), pong)
        m = Measurements()
        for _ in range(4):
            assert await m.ping(bus, "n1") is not None
            await m.ping(bus, "n1", probe=True)
        s = m.sites["n1"]
        assert s.srtt_ms is not None and 1.5 < s.srtt_ms < 200
        assert s.load == 3 and s.bandwidth_mbps is not None
        expected = PROBE_BYTES * 8 / 8e6 * 1000  # ms the padding takes at 8 Mbit/s
        assert 2 < s.bandwidth_mbps < 8 * 1.5, (s.bandwidth_mbps, expected)
        est = m.node(info, "f")
        assert est.rtt_ms == s.srtt_ms and est.clients >= 3 and est.unreachable is None
        # a node that stops answering: unreachable after LOST_AFTER pings in a row
        for _ in range(LOST_AFTER):
            assert await m.ping(bus, "gone") is None
        est = m.node(NodeInfo(name="gone"), "f")
        assert est.unreachable == f"no answer to {LOST_AFTER} pings in a row"
        await bus.close()

    asyncio.run(go())
