"""The controller with real node agents (fades.node.agent.NodeAgent): placement by the data
each node really holds, functions fetched from the repository by the nodes, the cloud path
served by a node's broker, and a stopped node refused for new tasks."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from fades.errors import NoPlacement
from fades.fabric import FabricSettings
from fades.functions.artifact import Artifact
from fades.functions.build import build_python
from fades.functions.keys import SigningKey
from fades.node.agent import NodeAgent

from .conftest import Bed
from .test_api import up

STATS = """
def main(data, params):
    vals = list(data["t"].values)
    return {"n": len(vals), "mean": sum(vals) / len(vals)}
"""


def keep_rooms(home: Path, *rooms: str) -> None:
    """Leave only ``rooms`` in the node's readings."""
    marks = ",".join("?" * len(rooms))
    with sqlite3.connect(home / "readings.db") as db:
        db.execute(
            f"DELETE FROM readings WHERE sensor_id IN "
            f"(SELECT id FROM sensors WHERE location NOT IN ({marks}))",
            rooms,
        )
        db.execute(f"DELETE FROM sensors WHERE location NOT IN ({marks})", rooms)


def test_real_agents_place_run_and_serve_the_cloud_path(
    bed: Bed,
    tmp_path: Path,
    prepare_home: Any,
    make_task: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
) -> None:
    # the nodes hold no functions and no runtime: they fetch both from the repository
    homes = {"north": ("room1", "room2"), "south": ("room3",)}
    for name, rooms in homes.items():
        keep_rooms(prepare_home(name, runtime=False), *rooms)
    bed.start_controller(down_after=2.0)
    agents = {
        name: NodeAgent(
            name,
            tmp_path / name,
            FabricSettings(bed.nats.url),
            heartbeat_s=0.2,
            ingest=False,
            capacity=1,
        )
        for name in homes
    }
    for agent in agents.values():
        bed.run(agent.start())
    try:
        up(bed, "north", "south")
        src = tmp_path / "src" / "stats.py"
        src.parent.mkdir()
        src.write_text(STATS)
        with bed.client() as c:
            c.upload(runtime_artifact.to_bytes())
            c.upload(build_python(src, key=signing_key).to_bytes())
            view = {n["name"]: {d["location"] for d in n["data"]} for n in c.nodes()}
            assert view == {"north": {"room1", "room2"}, "south": {"room3"}}

            def task(room: str) -> dict[str, Any]:
                op = {"name": "t", "select": {"location": room, "sensor_type": "temperature"}}
                return make_task("stats", data=[op], memory_mib=32)

            r3, r1 = c.submit(task("room3")), c.submit(task("room1"))
            assert (r3["node"], r1["node"]) == ("south", "north")
            k1 = c.submit(task("room1"), where="cloud")
            i3, i1, ik = (c.wait(r["task_id"], timeout=60) for r in (r3, r1, k1))
            assert i3["status"] == i1["status"] == ik["status"] == "done", (i3, i1, ik)
            e3, e1, k1 = (c.outcome(i["task_id"]) for i in (i3, i1, ik))
            assert e1.result == k1.result and e1.result["n"] > 0
            assert e3.result != e1.result
            assert {"queue", "retrieval", "compute", "total", "dispatch", "latency"} <= set(
                e1.timing
            )
            assert k1.timing["node_retrieval"] > 0 and ik["bytes_uplink"] > i1["bytes_uplink"]

            # north stops cleanly: at once down, and room1 can no longer be placed
            bed.run(agents["north"].stop())
            deadline = time.monotonic() + 15
            while any(n["up"] for n in c.nodes() if n["name"] == "north"):
                assert time.monotonic() < deadline, "north still up"
                time.sleep(0.02)
            with pytest.raises(NoPlacement, match="north hold it but are down"):
                c.submit(task("room1"))
            assert c.submit(task("room3"))["node"] == "south"
    finally:
        for agent in agents.values():
            bed.run(agent.stop())
