"""A controller restart keeps the registry view, tasks and results, consumes the results
published while it was down, re-publishes undispatched tasks and re-runs cloud tasks."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from fades.controller.store import ControllerStore
from fades.errors import TaskNotFound
from fades.functions.artifact import Artifact
from fades.task import parse_task

from .conftest import CORE_WASM, Bed, held
from .test_api import artifact_of, up

COUNT = """
import time

def main(data, params):
    end = time.monotonic() + params.get("busy_s", 0)
    while time.monotonic() < end:
        pass
    return {"rows": sum(len(ds) for ds in data.values()), "tag": params.get("tag")}
"""


def test_a_restarted_controller_keeps_and_completes_everything(
    bed: Bed, prepare_home: Any, make_task: Any, runtime_artifact: Artifact
) -> None:
    home = prepare_home("edge", functions={"count": COUNT})
    bed.start_controller(down_after=1.0)
    node = bed.agent("edge", home)
    ghost = bed.register("ghost", [held("room7")])
    queries = bed.listen("fades.node.edge.query")
    up(bed, "edge", "ghost")
    with bed.client() as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(artifact_of(home, "count"))
        t1 = c.submit(make_task("count", memory_mib=32, params={"tag": 1}))["task_id"]
        first = c.wait(t1, timeout=30)
        assert first["status"] == "done"
        digest = first["digest"]
        t2 = c.submit(make_task("count", memory_mib=32, params={"tag": 2, "busy_s": 0.6}))
        t2 = t2["task_id"]
        assert c.get(t2)["status"] in ("accepted", "dispatched")  # still running on the node
        seq_before = {n["name"]: n["seq"] for n in c.nodes()}
    bed.stop_controller()

    # while the controller is down: t2 finishes and its result waits in the stream, ghost dies
    assert node.node is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # (the node may not have taken t2 in yet)
        with contextlib.suppress(TaskNotFound):
            if node.node.orchestrator.get(t2).done:
                break
        time.sleep(0.05)
    assert node.node.orchestrator.get(t2).status == "done"
    bed.run(ghost.pause())
    # and what a crash would have left: t3 recorded but never published, t4 a cloud run cut short
    store = ControllerStore(bed.root / "controller" / "controller.db")
    for tid, where, status in (("t3", "edge", "accepted"), ("t4", "cloud", "dispatched")):
        task = parse_task(make_task("count", task_id=tid, memory_mib=32, params={"tag": tid}))
        store.add_task(
            tid,
            tenant="facilities",
            node="edge",
            where=where,
            task=task.model_dump(mode="json"),
            placement="before the crash",
            submitted_at=time.time(),
            digest=digest,
        )
        if status == "dispatched":
            store.mark_dispatched("facilities", tid)
    store.close()
    time.sleep(1.2)  # longer than down_after

    ctl = bed.start_controller(down_after=1.0)
    # the registry view comes back at once: edge up, ghost (silent for > down_after) down
    view = {n.name: n for n in ctl.nodes()}
    assert view["edge"].up and view["edge"].seq >= seq_before["edge"]
    assert not view["ghost"].up and "no heartbeat" in (view["ghost"].down_reason or "")
    with bed.client() as c:
        r1 = c.get(t1)
        assert r1["status"] == "done" and r1["result"]["tag"] == 1
        r2 = c.wait(t2, timeout=60)  # published while the controller was down
        assert r2["status"] == "done" and r2["result"]["tag"] == 2
        r3 = c.wait("t3", timeout=30)  # re-published by the dispatcher
        assert r3["status"] == "done" and r3["where"] == "edge"
        assert r3["result"]["tag"] == "t3"
        r4 = c.wait("t4", timeout=30)  # re-run in the cloud
        assert r4["status"] == "done" and r4["where"] == "cloud"
        assert r4["result"]["tag"] == "t4" and r4["digest"] == digest
        assert {t["task_id"] for t in c.tasks()} == {t1, t2, "t3", "t4"}
    assert node.node is not None and node.node.orchestrator.get("t3").status == "done"
    assert node.counters["duplicates"] == 0
    assert len(queries) == 1


def test_a_fresh_controller_fills_its_function_store_from_the_repository(
    bed: Bed, prepare_home: Any, make_task: Any, runtime_artifact: Artifact
) -> None:
    home = prepare_home("edge", functions={"count": COUNT})
    bed.start_controller()
    bed.agent("edge", home)
    up(bed, "edge")
    with bed.client() as c:
        c.upload(runtime_artifact.to_bytes())
        c.upload(artifact_of(home, "count"))
    bed.stop_controller()
    # a second controller, another folder: it holds no artifacts of its own
    bed.root = bed.root / "second"
    ctl = bed.start_controller()
    assert ctl.functions.names() == {}
    with bed.client() as c:
        info = c.wait(c.submit(make_task("count", memory_mib=32), where="cloud")["task_id"], 30)
    assert info["status"] == "done", info
    assert set(ctl.functions.names()) == {"count"}
    assert ctl.functions.runtime().digest == runtime_artifact.digest


def test_the_controller_carries_on_after_a_nats_restart(
    bed: Bed, make_task: Any, signing_key: Any
) -> None:
    from fades.functions.artifact import create
    from fades.outcome import Outcome

    # long enough that the node is still up after the outage
    ctl = bed.start_controller(down_after=10.0)
    node = bed.register("edge", [held("room1")])
    up(bed, "edge")
    with bed.client() as c:
        c.upload(create("core", "f", CORE_WASM, key=signing_key).to_bytes())
        bed.nats.stop()
        time.sleep(0.3)
        # NATS is down: the task is recorded, and handed over once NATS is back
        t1 = c.submit(make_task("f"), node="edge")["task_id"]
        assert c.get(t1)["status"] == "accepted"
        bed.nats.start()
        deadline = time.monotonic() + 15
        while c.get(t1)["status"] != "dispatched":
            assert time.monotonic() < deadline, "not re-dispatched after the NATS restart"
            time.sleep(0.05)
        sent = bed.run(node.dispatched())
        assert [e["task"]["credentials"]["task_id"] for e in sent] == [t1]
        done = Outcome(task_id=t1, tenant="facilities", node="edge", status="done", result=7)
        bed.publish_outcome("edge", done, f"{t1}.result")
        assert c.wait(t1, timeout=10)["result"] == 7
        # the registry still follows heartbeats
        seq = ctl.registry.nodes["edge"].info.seq
        while ctl.registry.nodes["edge"].info.seq <= seq + 2:
            assert time.monotonic() < deadline, "registry stopped following heartbeats"
            time.sleep(0.05)
        assert c.nodes()[0]["up"]
