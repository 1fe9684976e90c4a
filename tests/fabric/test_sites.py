"""A leaf server per site: the uplink can be cut, the site keeps storing, the hub gets all once.

Real parts: a hub nats-server (domain ``hub``, leafnode listener), a site leaf nats-server
(domain = site) behind a real TCP relay process, nats-py connections on both sides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fades.bus.nats import NatsBus
from fades.fabric.connect import FabricSettings
from fades.fabric.leaf import HUB_DOMAIN, EmbeddedLeaf, hub_leaf_config
from fades.fabric.server import EmbeddedNats, free_port
from fades.fabric.subjects import RESULTS_STREAM
from fades.fabric.upstream import UP_STREAM, site_source


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[EmbeddedNats]:
    leaf_port = free_port()
    server = EmbeddedNats(
        tmp_path / "nats" / "hub1",
        name="hub1",
        domain=HUB_DOMAIN,
        extra_config=hub_leaf_config(leaf_port),
    )
    server.leaf_port = leaf_port  # type: ignore[attr-defined]
    server.start(timeout=120.0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def leaf(tmp_path: Path, hub: EmbeddedNats) -> Iterator[EmbeddedLeaf]:
    site = EmbeddedLeaf(tmp_path, "edge1", f"nats-leaf://127.0.0.1:{hub.leaf_port}")  # type: ignore[attr-defined]
    site.start(timeout=120.0)
    try:
        yield site
    finally:
        site.stop()


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
