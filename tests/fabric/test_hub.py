"""The clustered hub: three real nats-server processes, JetStream R3, servers killed with -9.

The fabric tests drive an :class:`~fades.fabric.hub.EmbeddedHub` through a real
:class:`~fades.bus.nats.NatsBus`; the cluster tests start a :class:`~fades.cluster.LocalCluster`
with ``hub=3`` (controller and node agent as subprocesses) and submit tasks through the
controller's HTTP API while a hub server is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.waiting import wait_until as _wait

from fades.bus.nats import NatsBus
from fades.cluster import LocalCluster
from fades.errors import FabricError
from fades.fabric.connect import FabricSettings, connect
from fades.fabric.hub import EmbeddedHub
from fades.fabric.subjects import RESULTS_STREAM, TASKS_STREAM
from fades.functions.build import build_function

REPO = Path(__file__).resolve().parents[2]


async def _stream_info(url: str, stream: str) -> Any:
    nc = await connect(FabricSettings(url), name="probe")
    try:
        return await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()


def _leader(url: str, stream: str) -> str:
    info = asyncio.run(_stream_info(url, stream))
    assert info.cluster is not None and info.cluster.leader, info
    return str(info.cluster.leader)


# --- the hub alone ----------------------------------------------------------------------------
@pytest.fixture
def hub3(tmp_path: Path) -> Iterator[EmbeddedHub]:
    hub = EmbeddedHub(tmp_path / "hub", n=3, mqtt=True).start()
    try:
        yield hub
    finally:
        hub.stop()


def test_hub_of_three_elects_a_leader_and_keeps_three_copies(hub3: EmbeddedHub) -> None:
    assert hub3.meta_leader() in {"hub1", "hub2", "hub3"}
    assert len(hub3.url.split(",")) == 3 and len(hub3.leaf_urls) == 3
    assert hub3.mqtt_port == hub3.servers[0].mqtt_port and hub3.replicas == 3

    async def scenario() -> tuple[Any, Any, Any, Any]:
        bus = await NatsBus.connect(FabricSettings(hub3.url, replicas=3), name="t")
        try:
            # created right after start() returned: the readiness is real (an R3 stream
            # needs a meta leader and two peers)
            await bus.stream("R3TEST", ["r3.>"])
            kv = await bus.kv("r3kv")
            await kv.put("k", b"v")
            objects = await bus.objects("r3obj")
            await objects.put("o", b"x" * 1000)
            js = bus.nc.jetstream()
            return (
                await js.stream_info("R3TEST"),
                await js.stream_info("KV_r3kv"),
                await js.stream_info("OBJ_r3obj"),
                await kv.get("k"),
            )
        finally:
            await bus.close()

    *infos, value = asyncio.run(scenario())
    assert value is not None and value.value == b"v"
    for info in infos:
        assert info.config.num_replicas == 3, info.config
        assert info.cluster is not None and info.cluster.leader in {"hub1", "hub2", "hub3"}
        assert len(info.cluster.replicas or []) == 2  # the two followers


def test_a_killed_hub_server_loses_nothing_and_catches_up(hub3: EmbeddedHub) -> None:
    url = hub3.url

    async def publish(bus: NatsBus, first: int, count: int) -> None:
        for i in range(first, first + count):
            await bus.publish(f"ck.{i}", str(i).encode(), msg_id=f"m{i}")

    async def setup() -> None:
        bus = await NatsBus.connect(FabricSettings(url, replicas=3), name="t")
        try:
            await bus.stream("CATCHUP", ["ck.>"])
            await publish(bus, 0, 50)
        finally:
            await bus.close()

    asyncio.run(setup())
    victim = hub3.index(_leader(url, "CATCHUP"))
    hub3.kill(victim)
    assert victim not in hub3.running

    async def during() -> float:
        # the client was given all three URLs: it reaches a live server, and the publishes
        # (retried while a new stream leader is elected) are stored
        bus = await NatsBus.connect(FabricSettings(url, replicas=3), name="t2", timeout=30)
        t0 = time.monotonic()
        try:
            for i in range(50, 100):
                deadline = time.monotonic() + 30
                while True:
                    try:
                        await publish(bus, i, 1)
                        break
                    except FabricError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.1)
            return time.monotonic() - t0
        finally:
            await bus.close()

    asyncio.run(during())
    new_leader = _leader(url, "CATCHUP")
    assert hub3.index(new_leader) != victim
    hub3.start_server(victim)  # returns once the server reports itself current again

    # the restarted server's own copy (its monitoring endpoint reports its local store)
    seq, peers = hub3.stream_seqs(victim)["CATCHUP"]
    assert seq == 100 and peers == {"hub1", "hub2", "hub3"}
    info = asyncio.run(_stream_info(url, "CATCHUP"))
    assert info.state.messages == 100


def test_a_client_moves_to_another_server_within_a_second(hub3: EmbeddedHub) -> None:
    async def scenario() -> float:
        bus = await NatsBus.connect(FabricSettings(hub3.url, replicas=3), name="mover")
        try:
            await bus.stream("MOVE", ["mv.>"])
            url = bus.nc.connected_url
            assert url is not None
            victim = next(i for i, s in enumerate(hub3.servers, 1) if s.port == url.port)
            hub3.kill(victim)
            t0 = time.monotonic()
            while bus.reconnects < 1 or not bus.connected:
                assert time.monotonic() - t0 < 10, "no reconnect within 10 s"
                await asyncio.sleep(0.005)
            moved = time.monotonic() - t0
            assert bus.nc.connected_url is not None and bus.nc.connected_url.port != url.port
            # and JetStream answers there (a new stream leader if the old one died)
            deadline = time.monotonic() + 30
            while True:
                try:
                    await bus.publish("mv.a", b"1", msg_id="after")
                    break
                except FabricError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            return moved
        finally:
            await bus.close()

    moved = asyncio.run(scenario())
    assert moved < 1.0, f"reconnecting took {moved:.2f} s"


def test_hub_of_one_has_the_same_api(tmp_path: Path) -> None:
    with EmbeddedHub(tmp_path / "hub", n=1, mqtt=False) as hub:
        assert hub.url == hub.servers[0].url and hub.replicas == 1
        assert hub.meta_leader() == "hub1" and hub.mqtt_port is None

        async def use() -> Any:
            bus = await NatsBus.connect(FabricSettings(hub.url), name="t")
            try:
                await bus.stream("ONE", ["one.>"])
                await bus.publish("one.a", b"1", msg_id="a")
                return await bus.nc.jetstream().stream_info("ONE")
            finally:
                await bus.close()

        info = asyncio.run(use())
        assert info.config.num_replicas == 1 and info.state.messages == 1
        hub.kill(1)
        hub.start_server(1)
        assert asyncio.run(_stream_info(hub.url, "ONE")).state.messages == 1


def test_hub_of_five_keeps_three_copies(tmp_path: Path) -> None:
    with EmbeddedHub(tmp_path / "hub", n=5, mqtt=False) as hub:
        assert hub.replicas == 3 and hub.meta_leader() in {f"hub{i}" for i in range(1, 6)}

        async def use() -> Any:
            bus = await NatsBus.connect(FabricSettings(hub.url, replicas=3), name="t")
            try:
                await bus.stream("FIVE", ["five.>"])
                await bus.publish("five.a", b"1", msg_id="a")
                return await bus.nc.jetstream().stream_info("FIVE")
            finally:
                await bus.close()

        info = asyncio.run(use())
        assert info.config.num_replicas == 3 and info.state.messages == 1


def test_hub_sizes_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1, 3 or 5"):
        EmbeddedHub(tmp_path, n=2)
    with pytest.raises(ValueError, match=r"servers 1\.\.1"):
        EmbeddedHub(tmp_path, n=1).server(2)


# --- a whole cluster over a hub of three ------------------------------------------------------
@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    home = tmp_path_factory.mktemp("hub") / "cluster"
    cluster = LocalCluster(
        home,
        nodes=1,
        days=0.02,
        sensors=False,
        ingest=False,
        functions=False,
        heartbeat_s=0.5,
        down_after_s=10.0,
        hub=3,
    )
    cluster.prepare()
    cluster.start()
    try:
        assert cluster.key is not None
        art = build_function(REPO / "examples" / "functions" / "mean_core.wat", key=cluster.key)
        cluster.client().upload(art.to_bytes())
        yield cluster
    finally:
        cluster.stop()


def _task() -> dict[str, Any]:
    return {
        "credentials": {"tenant": "facilities"},
        "data": [{"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}}],
        "function": {"artifact": "mean_core", "time_budget_ms": 20000},
    }


class Submitter(threading.Thread):
    """Submits a task every ``period`` s through the HTTP API; a refused or failed call is
    retried (the client's view of a stall)."""

    def __init__(self, cluster: LocalCluster, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.client = cluster.client()
        self.period = period
        self.accepted: list[tuple[float, str]] = []
        self.errors: list[tuple[float, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                receipt = self.client.submit(_task())
                self.accepted.append((time.monotonic(), receipt["task_id"]))
            except Exception as exc:  # the stall: count it, retry
                self.errors.append((time.monotonic(), repr(exc)))
            self.halt.wait(self.period)


def _kill_under_load(cluster: LocalCluster, victim: int) -> dict[str, Any]:
    sub = Submitter(cluster)
    sub.start()
    try:
        _wait(lambda: len(sub.accepted) >= 10, 60, "tasks accepted before the kill")
        t_kill = time.monotonic()
        wall_kill = time.time()
        n_before = len(sub.accepted)
        cluster.hub.kill(victim)
        _wait(lambda: len(sub.accepted) >= n_before + 20, 60, "tasks accepted after the kill")
    finally:
        sub.halt.set()
        sub.join(30)
    first_after = next(t for t, _ in sub.accepted if t > t_kill)
    ids = [tid for _, tid in sub.accepted]
    assert len(set(ids)) == len(ids)
    client = cluster.client()
    late = {tid for t, tid in sub.accepted if t > t_kill}
    finished: list[float] = []
    for tid in ids:
        rec = client.wait(tid, timeout=120)
        assert rec["status"] == "done", rec
        assert rec.get("attempts", 1) == 1, rec  # started once on the node: never twice
        if tid in late:
            finished.append(float(rec["finished_at"]))
    cluster.hub.start_server(victim)  # it comes back and catches up
    got = {
        "victim": cluster.hub.server(victim).name,
        "accepted": len(ids),
        "submit_errors": len(sub.errors),
        "stall_accept_s": round(first_after - t_kill, 3),
        # the first task accepted after the kill: how long after the kill it completed
        "next_done_s": round(min(finished) - wall_kill, 3),
    }
    print("hub kill:", got)
    return got


def _node_task_ids(cluster: LocalCluster) -> list[str]:
    import sqlite3

    with sqlite3.connect(cluster.node_home("edge1") / "tasks.db") as con:
        return [r[0] for r in con.execute("SELECT id FROM tasks")]


def test_every_accepted_task_completes_once_when_the_tasks_stream_leader_dies(
    fleet: LocalCluster,
) -> None:
    leader = _leader(fleet.hub.url, TASKS_STREAM)
    got = _kill_under_load(fleet, fleet.hub.index(leader))
    # the API kept answering: the next task after the kill was accepted within seconds
    assert got["stall_accept_s"] < 15, got
    ids = _node_task_ids(fleet)
    assert len(ids) == len(set(ids))  # the node never held a task twice
    # the cluster still serves after the server came back (once the node's heartbeats,
    # which may have lapsed during the election on a loaded machine, have it up again)
    fleet.wait_nodes(timeout=120)
    tid = fleet.client().submit(_task())["task_id"]
    assert fleet.client().wait(tid, timeout=60)["status"] == "done"


def test_every_accepted_task_completes_once_when_a_follower_dies(fleet: LocalCluster) -> None:
    leaders = {_leader(fleet.hub.url, TASKS_STREAM), _leader(fleet.hub.url, RESULTS_STREAM)}
    follower = next(i for i in (1, 2, 3) if fleet.hub.server(i).name not in leaders)
    got = _kill_under_load(fleet, follower)
    assert got["stall_accept_s"] < 15, got
    ids = _node_task_ids(fleet)
    assert len(ids) == len(set(ids))


# --- fades up --hub ---------------------------------------------------------------------------
def test_fades_up_hub_3_starts_three_servers_and_stops_them(tmp_path: Path) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys

    from fades.client import FadesClient
    from fades.fabric.server import port_open

    home = tmp_path / "up"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fades", "up", "--hub", "3", "--nodes", "1", "--days", "0.02",
         "--no-sensors", "--home", str(home), "--duration", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("stop:"):
                break
        text = "".join(lines)
        servers = sorted(set(re.findall(r"^NATS (hub\d)\s+nats://127\.0\.0\.1:(\d+)", text, re.M)))
        assert [s for s, _ in servers] == ["hub1", "hub2", "hub3"], text
        urls = re.search(r"FADES_NATS_URL=(\S+)", text)
        assert urls is not None and len(urls.group(1).split(",")) == 3, text
        url = re.search(r"^controller\s+(http://\S+)", text, re.M)
        token = re.search(r"^token\s+(\S+)\s+\(tenant facilities", text, re.M)
        assert url and token, text
        client = FadesClient(url.group(1), token.group(1))
        rec = client.wait(client.submit(_task())["task_id"], 60)
        assert rec["status"] == "done", rec
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, text + out
    assert not any(port_open("127.0.0.1", int(p)) for _, p in servers)


def test_fades_up_refuses_a_hub_of_two(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "fades", "up", "--hub", "2", "--home", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2
    assert "1, 3 or 5" in done.stdout + done.stderr
    assert not (tmp_path / "x").exists()
