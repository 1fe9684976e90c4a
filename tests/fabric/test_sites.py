"""A leaf server per site: the uplink can be cut, the site keeps storing, the hub gets all once.

Real parts: a hub nats-server (domain ``hub``, leafnode listener), a site leaf nats-server
(domain = site) behind a real TCP relay process, nats-py connections on both sides.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from tests.guests import SLOW
from tests.waiting import wait_until as _wait_until

from fades.bus.nats import NatsBus
from fades.errors import NodeUnavailable
from fades.fabric.connect import FabricSettings
from fades.fabric.leaf import HUB_DOMAIN, EmbeddedLeaf
from fades.fabric.server import EmbeddedNats
from fades.fabric.subjects import RESULTS_STREAM
from fades.fabric.upstream import UP_STREAM, site_source


async def _site_bus(leaf: EmbeddedLeaf) -> NatsBus:
    return await NatsBus.connect(
        FabricSettings(url=leaf.url, domain=HUB_DOMAIN, site=leaf.site), name="site-test"
    )


async def _hub_results(hub: EmbeddedNats, sites: list[str]) -> NatsBus:
    bus = await NatsBus.connect(FabricSettings(url=hub.url), name="hub-test")
    await bus.stream(RESULTS_STREAM, ["fades.result.>"])
    from nats.js.api import StreamConfig

    info = await bus.js.stream_info(RESULTS_STREAM)
    cfg: StreamConfig = info.config
    cfg.sources = [site_source(s, ["fades.result.>"]) for s in sites]
    await bus.js.update_stream(cfg)
    return bus


async def _drain(bus: NatsBus, want: int, timeout: float) -> dict[str, int]:
    """Consume FADES_RESULTS until ``want`` distinct message ids; count every delivery."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout

    async def run() -> None:
        async for d in bus.consume(RESULTS_STREAM, "counter", "fades.result.>"):
            seen[d.msg_id or "?"] = seen.get(d.msg_id or "?", 0) + 1
            await d.ack()
            if len(seen) >= want:
                return

    await asyncio.wait_for(run(), max(1.0, deadline - time.monotonic()))
    return seen


async def _until_sourced(bus: NatsBus, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (await bus.js.stream_info(RESULTS_STREAM)).state.messages < n:
        assert time.monotonic() < deadline, "the hub never sourced the site's stream"
        await asyncio.sleep(0.1)


def test_local_view_is_the_site_domain(hub: EmbeddedNats, leaf: EmbeddedLeaf) -> None:
    async def go() -> None:
        bus = await _site_bus(leaf)
        try:
            local = bus.local()
            assert local is not bus and local.local() is local
            await local.stream("SITE_ONLY", ["site.only.>"])
            # the stream is at the site, not at the hub
            await local.js.stream_info("SITE_ONLY")
            hub_bus = await NatsBus.connect(FabricSettings(url=hub.url), name="hub")
            try:
                with pytest.raises(Exception, match="not found"):
                    await hub_bus.js.stream_info("SITE_ONLY")
            finally:
                await hub_bus.close()
        finally:
            await bus.close()
        assert bus.nc.is_closed  # the view did not keep the connection

    asyncio.run(go())


def test_publish_up_reaches_the_hub_once_and_survives_a_cut(
    hub: EmbeddedNats, leaf: EmbeddedLeaf
) -> None:
    async def go() -> None:
        hub_bus = await _hub_results(hub, [leaf.site])
        bus = await _site_bus(leaf)
        try:
            await bus.publish_up("fades.result.n1", b"r0", msg_id="t0.result")
            await bus.publish_up("fades.result.n1", b"r0", msg_id="t0.result")  # a retry
            await _until_sourced(hub_bus, 1)
            # the same id published directly at the hub as well: still once
            await hub_bus.publish("fades.result.n1", b"r0", msg_id="t0.result")
            leaf.cut_uplink()
            for i in range(1, 21):  # stored at the site while the hub is unreachable
                await bus.publish_up("fades.result.n1", f"r{i}".encode(), msg_id=f"t{i}.result")
            info = await bus.local().js.stream_info(UP_STREAM)
            assert info.state.messages == 21
            # a good request at the hub still works while the site is cut off
            await hub_bus.publish("fades.result.hubnode", b"x", msg_id="hub.result")
            leaf.restore_uplink()
            seen = await _drain(hub_bus, 22, timeout=60.0)
            assert set(seen) == {f"t{i}.result" for i in range(21)} | {"hub.result"}
            assert all(n == 1 for n in seen.values()), seen
            # the hub stored each once: 22 messages in all (acked ones leave the work queue)
            info = await hub_bus.js.stream_info(RESULTS_STREAM)
            assert info.state.last_seq == 22
        finally:
            await bus.close()
            await hub_bus.close()

    asyncio.run(go())


def test_without_a_site_publish_up_is_publish(hub: EmbeddedNats) -> None:
    async def go() -> None:
        bus = await NatsBus.connect(FabricSettings(url=hub.url), name="plain")
        try:
            assert bus.local() is bus
            await bus.stream(RESULTS_STREAM, ["fades.result.>"])
            await bus.publish_up("fades.result.n1", b"x", msg_id="a.result")
            info: Any = await bus.js.stream_info(RESULTS_STREAM)
            assert info.state.messages == 1
        finally:
            await bus.close()

    asyncio.run(go())


# --- the whole system at a site: LocalCluster(sites=True) --------------------------------------
def _readings_since(cluster: Any, node: str, since: float) -> int:
    import sqlite3

    with sqlite3.connect(cluster.node_home(node) / "readings.db") as con:
        return int(
            con.execute("SELECT COUNT(*) FROM readings WHERE ts >= ?", (since,)).fetchone()[0]
        )


def _delivered(cluster: Any, node: str, ids: list[str]) -> dict[str, tuple[str, int]]:
    import sqlite3

    marks = ",".join("?" * len(ids))
    with sqlite3.connect(cluster.node_home(node) / "tasks.db") as con:
        rows = con.execute(f"SELECT id, status, delivered FROM tasks WHERE id IN ({marks})", ids)
        return {r[0]: (r[1], r[2]) for r in rows}


def _metric(cluster: Any, name: str) -> float:
    import httpx

    text = httpx.get(f"{cluster.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_site_cut_for_10_s_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    from fades.cluster import LocalCluster
    from fades.functions.build import build_python

    cluster = LocalCluster(
        tmp_path / "c",
        nodes=1,
        days=0.02,
        sensors=True,
        sensor_rate_s=0.2,
        heartbeat_s=0.3,
        down_after_s=2.0,
        sites=True,
        capacity=2,
    )
    cluster.prepare()
    cluster.start()
    try:
        client = cluster.client()
        src = tmp_path / "slow.py"
        src.write_text(SLOW)
        assert cluster.key is not None
        client.upload(build_python(src, key=cluster.key).to_bytes())
        nodes = client.nodes()
        assert [n["name"] for n in nodes] == ["edge1"]
        room = cluster.rooms("edge1")[0]
        task = {
            "credentials": {"tenant": "facilities"},
            "data": [{"name": "t", "select": {"location": room, "sensor_type": "temperature"}}],
            "function": {"artifact": "slow", "time_budget_ms": 60000, "params": {"seconds": 1.5}},
        }
        # warm up (the node fetches the artifact from the hub) and check the path works
        first = client.wait(client.submit(task)["task_id"], 120)
        assert first["status"] == "done", first
        ids = [client.submit(task)["task_id"] for _ in range(6)]
        _wait_until(lambda: len(_delivered(cluster, "edge1", ids)) == 6, 60, "node holds tasks")
        sim = cluster.simulators[0]
        published0 = sim.stats["published"]
        t_cut = time.time()
        cluster.cut_uplink("edge1")
        # the controller sees the node go down; the node keeps running what it holds, and
        # its outbox hands each result to the site's stream (delivered = stored at the site)
        _wait_until(
            lambda: all(v == ("done", 1) for v in _delivered(cluster, "edge1", ids).values()),
            60,
            "results stored at the site while cut off",
        )
        assert all(r["status"] != "done" for r in (client.get(i) for i in ids))
        # the controller sees the site's node go offline: a task for it is queued by default
        # (it waits in the hub), or refused if it says so; either way the answer says which
        _wait_until(lambda: not client.nodes()[0]["up"], 30, "edge1 marked down")
        queued = client.submit(task)
        assert queued["node"] == "edge1" and "edge1" in queued["queued"], queued
        assert "offline since" in queued["queued"] and "waits in the hub" in queued["queued"]
        with pytest.raises(NodeUnavailable, match=r"edge1.*offline.*when_offline: queue would"):
            client.submit(task | {"when_offline": "refuse"})
        ids.append(queued["task_id"])
        time.sleep(max(0.0, 10.0 - (time.time() - t_cut)))  # a 10 s outage in all
        during = _readings_since(cluster, "edge1", t_cut)
        published = sim.stats["published"] - published0
        assert during >= 0.8 * published > 0, (during, published)  # ingest went on locally
        cluster.restore_uplink("edge1")
        t_back = time.monotonic()
        recs = [client.wait(i, 120) for i in ids]  # the queued one too
        drain = time.monotonic() - t_back
        assert all(r["status"] == "done" for r in recs), recs
        assert _metric(cluster, "fades_results_duplicate_total") == 0
        print(f"drain after a 10 s cut: {drain:.2f} s")
        assert drain < 60, drain
        # a good request after the outage
        again = client.wait(client.submit(task)["task_id"], 120)
        assert again["status"] == "done", again
    finally:
        cluster.stop()


def test_the_controller_sources_a_new_site_and_re_adds_it_after_a_gap(
    hub: EmbeddedNats, leaf: EmbeddedLeaf
) -> None:
    from types import SimpleNamespace

    from fades.controller.registry import NodeEntry
    from fades.controller.sites import SiteSources
    from fades.fabric.protocol import NodeInfo
    from fades.fabric.upstream import source_site
    from fades.pipelines.protocol import EVENTS_STREAM

    async def go() -> None:
        hub_bus = await _hub_results(hub, ["other"])  # a source of another site, kept
        await hub_bus.stream(EVENTS_STREAM, ["fades.pevent.>"])
        bus = await _site_bus(leaf)
        try:
            await bus.ensure_up()
            entry = NodeEntry(NodeInfo(name="n1", site=leaf.site, heartbeat_s=0.5), time.time())
            registry: Any = SimpleNamespace(nodes={"n1": entry, "hubnode": NodeEntry(
                NodeInfo(name="hubnode"), time.time())})  # fmt: skip
            sites = SiteSources(hub_bus, registry, readd=True)
            await sites.check()
            assert sites.stats == {"added": 2, "readded": 0}
            await sites.check()  # nothing new: nothing changes
            assert sites.stats == {"added": 2, "readded": 0}

            async def sourced(stream: str) -> list[str]:
                info = await hub_bus.js.stream_info(stream)
                return sorted(str(source_site(s)) for s in info.config.sources or [])

            assert await sourced(RESULTS_STREAM) == ["edge1", "other"]
            assert await sourced(EVENTS_STREAM) == ["edge1"]
            await bus.publish_up("fades.result.n1", b"a", msg_id="a.result")
            await bus.publish_up("fades.pevent.p1", b"e", msg_id="e.event")
            await _until_sourced(hub_bus, 1)
            # the site's heartbeat returns after a gap: its sources are re-added, once each
            entry.seen_at += 20.0
            await sites.check()
            assert sites.stats == {"added": 2, "readded": 2}
            assert await sourced(RESULTS_STREAM) == ["edge1", "other"]
            await bus.publish_up("fades.result.n1", b"b", msg_id="b.result")
            seen = await _drain(hub_bus, 2, timeout=60.0)
            assert seen == {"a.result": 1, "b.result": 1}
            info = await hub_bus.js.stream_info(RESULTS_STREAM)
            assert info.state.last_seq == 2  # 'a' forwarded again was dropped by its id
            events = await hub_bus.js.stream_info(EVENTS_STREAM)
            assert events.state.messages == 1
        finally:
            await bus.close()
            await hub_bus.close()

    asyncio.run(go())
