"""The whole system as separate processes: embedded nats-server, controller, node agents.

Every test here starts a real :class:`~fades.cluster.LocalCluster` (its own nats-server on
free loopback ports, ``fades controller start`` and ``fades node start`` subprocesses) and
drives it through the controller's HTTP API over a real socket.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.guests import SLOW
from tests.waiting import wait_until as _wait_for

from fades.cluster import LocalCluster
from fades.errors import NoPlacement, TaskNotFound
from fades.fabric.server import port_open
from fades.functions.build import build_python

REPO = Path(__file__).resolve().parents[2]

LATEST = """
def main(data, params):
    ds = data["t"]
    ts = list(ds.ts)
    return {"count": len(ts), "newest": max(ts) if ts else None}
"""


def _task(artifact: str, room: str, tenant: str = "facilities", **select: Any) -> dict[str, Any]:
    sel = {"location": room, "sensor_type": "temperature"} | select
    return {
        "credentials": {"tenant": tenant},
        "data": [{"name": "t", "select": sel}],
        "function": {"artifact": artifact, "time_budget_ms": 20000},
    }


def _outbox(cluster: LocalCluster, task_id: str, node: str = "edge1") -> tuple[str, int] | None:
    """The task's status and outbox flag in the node's own tasks.db."""
    with sqlite3.connect(cluster.node_home(node) / "tasks.db") as con:
        row = con.execute("SELECT status, delivered FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else (row[0], row[1])


def _stream_holds_result(cluster: LocalCluster, task_id: str, node: str = "edge1") -> bool:
    """Whether the fabric's results stream holds ``node``'s result for ``task_id``."""
    import asyncio

    from nats.js.errors import NotFoundError

    from fades.fabric import connect
    from fades.fabric.subjects import RESULTS_STREAM, result_subject

    async def probe() -> bool:
        nc = await connect(cluster.nats.url)
        try:
            msg = await nc.jetstream().get_last_msg(RESULTS_STREAM, result_subject(node))
        except NotFoundError:
            return False
        finally:
            await nc.close()
        return task_id.encode() in (msg.data or b"")

    return asyncio.run(probe())


def _upload(cluster: LocalCluster, tmp: Path, name: str, source: str) -> None:
    path = tmp / f"{name}.py"
    path.write_text(source)
    assert cluster.key is not None
    cluster.client().upload(build_python(path, key=cluster.key).to_bytes())


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    started: list[LocalCluster] = []

    def make(name: str = "c", **kwargs: Any) -> LocalCluster:
        opts: dict[str, Any] = dict(
            nodes=1, days=0.02, sensors=False, heartbeat_s=0.3, down_after_s=2.0
        )
        opts.update(kwargs)
        cluster = LocalCluster(tmp_path / name, **opts)
        started.append(cluster)
        cluster.prepare()
        cluster.start()
        return cluster

    yield make
    for c in started:
        c.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two nodes, sensors streaming over MQTT every 0.2 s; shared by the read-only tests."""
    home = tmp_path_factory.mktemp("live") / "cluster"
    cluster = LocalCluster(
        home, nodes=2, days=0.05, sensors=True, sensor_rate_s=0.2, heartbeat_s=0.3
    )
    cluster.prepare()
    cluster.start()
    _upload(cluster, home.parent, "latest", LATEST)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_auto_placement_follows_the_data(live: LocalCluster) -> None:
    client = live.client()
    for node in live.names:
        room = live.rooms(node)[0]
        receipt = client.submit(_task("mean_core", room))
        assert receipt["node"] == node, receipt
        assert "data locality" in receipt["placement"]
        rec = client.wait(receipt["task_id"], timeout=60)
        assert rec["status"] == "done" and rec["node"] == node, rec
        assert rec["result"]["count"] > 0
    # one task reading rooms of two different nodes: no single node holds both
    both = _task("mean_core", live.rooms("edge1")[0])
    both["data"].append({"name": "u", "select": {"location": live.rooms("edge2")[0]}})
    with pytest.raises(NoPlacement, match=r"'[tu]'"):
        client.submit(both)
    with pytest.raises(NoPlacement, match="room99"):
        client.submit(_task("mean_core", "room99"))


def test_mqtt_readings_are_seen_by_a_task_seconds_later(live: LocalCluster) -> None:
    client = live.client()
    room = live.rooms("edge2")[1]
    started = time.time()
    # bounded, and generous: on a loaded 2-core machine the sensors and the ingest lag seconds
    deadline = time.monotonic() + 120
    rec: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rec = client.wait(client.submit(_task("latest", room, last_seconds=20))["task_id"], 60)
        assert rec["status"] == "done", rec
        if rec["result"]["count"] >= 5 and (rec["result"]["newest"] or 0) >= started:
            break
        time.sleep(0.5)
    # history is at 60 s steps (at most one reading in a 20 s window): only readings streamed
    # over MQTT can put 5 there, and the newest was taken after this test began
    assert rec["result"]["count"] >= 5, rec["result"]
    assert (rec["result"]["newest"] or 0) >= started, (rec["result"], started)
    assert rec["node"] == "edge2"


def test_edge_and_cloud_give_the_same_answer(live: LocalCluster) -> None:
    client = live.client()
    # a fixed window in the past, so that streaming readings cannot make the two differ
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
    task = _task("minmaxmean", live.rooms("edge1")[0], until=until)
    edge = client.wait(client.submit(task, where="edge")["task_id"], 60)
    cloud = client.wait(client.submit(task, where="cloud")["task_id"], 60)
    assert edge["status"] == cloud["status"] == "done", (edge, cloud)
    assert edge["result"] == cloud["result"]
    assert cloud["where"] == "cloud" and edge["where"] == "edge"
    for key in ("retrieval", "transfer", "start", "compute"):
        assert key in edge["timing"] and key in cloud["timing"]


def test_tenants_see_only_their_tasks_and_node_policy_still_applies(live: LocalCluster) -> None:
    owner = live.client()
    visitor = live.client(live.visitor_token)
    tid = owner.submit(_task("mean_core", "room1"))["task_id"]
    owner.wait(tid, 60)
    with pytest.raises(TaskNotFound):
        visitor.get(tid)
    assert tid not in {t["task_id"] for t in visitor.tasks()}
    # the node's policy lets visitors read temperature only
    co2 = _task("mean_core", "room1", tenant="visitor", sensor_type="co2")
    rec = visitor.wait(visitor.submit(co2)["task_id"], 60)
    assert rec["status"] == "failed" and rec["error_kind"] == "AccessDenied", rec


def test_killed_node_completes_its_accepted_tasks_after_restart(
    cluster_factory: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster = cluster_factory("kill", capacity=1)
    _upload(cluster, tmp_path, "slow", SLOW)
    client = cluster.client()
    ids = [
        client.submit(_task("slow", "room1", last=5) | {"function": {
            "artifact": "slow", "params": {"seconds": 1.0}, "time_budget_ms": 20000}})["task_id"]
        for _ in range(3)
    ]  # fmt: skip
    db = cluster.node_home("edge1") / "tasks.db"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # all three accepted by the node, one running
        with sqlite3.connect(db) as con:
            rows = dict(con.execute("SELECT id, status FROM tasks").fetchall())
        if set(ids) <= set(rows) and "running" in rows.values():
            break
        time.sleep(0.05)
    assert set(ids) <= set(rows) and "done" not in rows.values(), rows
    cluster.stop_process("edge1", kill=True)
    t_kill = time.monotonic()
    while time.monotonic() - t_kill < 10:  # stated: down after 2 s without a heartbeat
        if not {n["name"]: n["up"] for n in client.nodes()}["edge1"]:
            break
        time.sleep(0.1)
    down_after = time.monotonic() - t_kill
    assert down_after < 2.0 + 1.5, f"node still listed up {down_after:.1f} s after the kill"
    with pytest.raises(NoPlacement, match="down"):
        client.submit(_task("mean_core", "room1"))
    cluster.start_node("edge1")
    cluster.wait_nodes(["edge1"], timeout=60)
    recs = [client.wait(i, timeout=90) for i in ids]
    assert [r["status"] for r in recs] == ["done"] * 3, recs
    assert all(r["result"] == {"rows": 5} for r in recs)
    # each result is stored once by the controller, whatever the node re-published
    mine = [t for t in client.tasks(limit=1000) if t["task_id"] in ids]
    assert len(mine) == 3


def test_controller_restart_keeps_registry_tasks_and_results(
    cluster_factory: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster = cluster_factory("ctl")
    _upload(cluster, tmp_path, "slow", SLOW)
    client = cluster.client()
    done_before = client.wait(client.submit(_task("mean_core", "room1"))["task_id"], 60)
    assert done_before["status"] == "done"
    slow = _task("slow", "room1", last=5)
    slow["function"]["params"] = {"seconds": 1.5}
    pending = client.submit(slow)["task_id"]
    cluster.stop_process("controller")
    assert not port_open("127.0.0.1", cluster.http_port)
    # the node finishes the task and publishes its result while the controller is away:
    # its outbox marks the result delivered (JetStream acknowledged it) and the results
    # stream holds it, all before the controller is started again
    _wait_for(lambda: _outbox(cluster, pending) == ("done", 1), 60, "result delivered")
    assert _stream_holds_result(cluster, pending)
    assert not port_open("127.0.0.1", cluster.http_port)
    cluster.start_controller()
    cluster.wait_controller()
    client = cluster.client()
    again = client.get(done_before["task_id"])
    assert again["status"] == "done" and again["result"] == done_before["result"]
    rec = client.wait(pending, timeout=60)
    assert rec["status"] == "done" and rec["result"] == {"rows": 5}, rec
    assert {n["name"] for n in client.nodes()} == {"edge1"}
    cluster.wait_nodes(timeout=30)


def test_nodes_and_controller_reconnect_after_a_nats_restart(
    cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = cluster_factory("natsr")
    client = cluster.client()
    assert client.wait(client.submit(_task("mean_core", "room1"))["task_id"], 60)["status"] == (
        "done"
    )
    cluster.nats.stop()
    time.sleep(1.0)
    cluster.nats.start()
    cluster.wait_nodes(timeout=60)
    rec = client.wait(client.submit(_task("mean_core", "room1"))["task_id"], 60)
    assert rec["status"] == "done", rec


def test_fades_up_runs_a_cluster_and_ctrl_c_stops_all_of_it(tmp_path: Path) -> None:
    home = tmp_path / "up"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fades", "up", "--nodes", "2", "--days", "0.02",
         "--home", str(home), "--duration", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    url = token = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not (url and token):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.match(r"controller\s+(http://\S+)", line):
                url = m.group(1)
            if (m := re.match(r"token\s+(\S+)\s+\(tenant facilities", line)) and not token:
                token = m.group(1)
        assert url and token, "".join(lines)
        from fades.client import FadesClient

        client = FadesClient(url, token)
        assert sorted(n["name"] for n in client.nodes() if n["up"]) == ["edge1", "edge2"]
        rec = client.wait(client.submit(_task("mean_core", "room3"))["task_id"], 60)
        assert rec["status"] == "done" and rec["node"] == "edge2", rec
        nats_port = int(re.search(r"nats://127.0.0.1:(\d+)", "".join(lines)).group(1))  # type: ignore[union-attr]
        http_port = int(url.rsplit(":", 1)[1])
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + out
    assert "stopped" in out
    assert not port_open("127.0.0.1", http_port) and not port_open("127.0.0.1", nats_port)
    leftovers = subprocess.run(
        ["pgrep", "-f", str(home)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"
