"""A local cluster's NATS requires the token kept in its folder: clients, MQTT clients,
hub routes and site leaf servers without it are refused; every part the cluster starts has it.

Real nats-server processes, real controller and node-agent processes, nats-py and paho."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fades.cluster import LocalCluster
from fades.errors import FabricError
from fades.fabric import connect
from fades.fabric.connect import redact
from fades.fabric.hub import HUB_DOMAIN, EmbeddedHub
from fades.fabric.leaf import EmbeddedLeaf

TOKEN = "t0ken-for-tests-" + "x" * 16


async def _refused(url: str) -> str:
    """The server's answer to a client that connects to ``url`` (once, no reconnects)."""
    try:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
    except Exception as exc:  # nats raises its own Error type for the refusal
        return str(exc)
    await nc.close()
    return "accepted"


async def _accepted(url: str) -> bool:
    nc = await connect(url, timeout=20)
    try:
        await nc.flush(timeout=10)
        return True
    finally:
        await nc.close()


def _mqtt_connects(port: int, password: str | None) -> bool:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}")
    if password is not None:
        client.username_pw_set("anyone", password)
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not client.is_connected():
            time.sleep(0.05)
        return client.is_connected()
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("auth") / "c", nodes=1, days=0.02, functions=False)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_the_cluster_nats_refuses_clients_without_its_token(cluster: LocalCluster) -> None:
    path = cluster.home / "nats.token"
    token = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # the servers' config files hold it too: owner-only as well
    for conf in cluster.home.glob("**/nats-server.conf"):
        assert token in conf.read_text() and stat.S_IMODE(conf.stat().st_mode) == 0o600, conf
    assert cluster.nats_token == token and len(token) >= 32
    plain = cluster.nats.address
    assert "Authorization Violation" in asyncio.run(_refused(plain))
    assert "Authorization Violation" in asyncio.run(
        _refused(f"nats://wrong-token-1234567@{plain[7:]}")
    )
    # the token, in the URL or in the settings, lets a client in; messages never show it
    assert asyncio.run(_accepted(cluster.nats.url))
    assert token in cluster.nats.url and token not in redact(cluster.nats.url)
    # the MQTT gateway takes the token as the password
    assert cluster.nats.mqtt_port is not None
    assert not _mqtt_connects(cluster.nats.mqtt_port, None)
    assert not _mqtt_connects(cluster.nats.mqtt_port, "wrong")
    assert _mqtt_connects(cluster.nats.mqtt_port, token)
    # the parts the cluster started have it (the node registered through NATS), and it is
    # not on their command lines
    assert [n["name"] for n in cluster.client().nodes() if n["up"]] == ["edge1"]
    for proc in cluster.procs.values():
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline


def test_a_folder_keeps_its_token_across_starts(cluster: LocalCluster) -> None:
    token = cluster.nats_token
    cluster.stop()
    again = LocalCluster(cluster.home, nodes=1, days=0.02, functions=False, sensors=False)
    again.start()
    try:
        assert again.nats_token == token
        assert asyncio.run(_accepted(again.nats.url))
        assert "Authorization Violation" in asyncio.run(_refused(again.nats.address))
    finally:
        again.stop()
        cluster.start()  # the module's fixture stops it at the end


def test_hub_routes_and_site_leaf_servers_authenticate_with_the_token(tmp_path: Path) -> None:
    hub = EmbeddedHub(tmp_path / "hub", n=3, mqtt=False, token=TOKEN)
    hub.start()  # returns once the three servers routed to each other and elected a leader
    site = EmbeddedLeaf(tmp_path, "s1", hub.leaf_urls, token=TOKEN)
    stranger = EmbeddedLeaf(tmp_path, "s2", hub.leaf_urls, token="another-token-" + "y" * 16)
    try:
        site.start()
        stranger.start()
        assert "Authorization Violation" in asyncio.run(_refused(hub.address.split(",")[1]))
        assert "Authorization Violation" in asyncio.run(_refused(site.server.address))

        async def hub_reached(leaf: EmbeddedLeaf, wait: float) -> bool:
            nc = await connect(leaf.url, timeout=20)
            try:
                deadline = time.monotonic() + wait
                while True:
                    try:
                        await nc.jetstream(domain=HUB_DOMAIN).account_info()
                        return True
                    except Exception:
                        if time.monotonic() > deadline:
                            return False
                        await asyncio.sleep(0.2)
            finally:
                await nc.close()

        assert asyncio.run(hub_reached(site, 30))
        # a leaf server with another token never gets through to the hub
        assert not asyncio.run(hub_reached(stranger, 3))
        log = (stranger.dir / "nats-server.log").read_text()
        assert "Authorization Violation" in log or "authorization" in log.lower(), log[-800:]
    finally:
        stranger.stop()
        site.stop()
        hub.stop()


def test_connect_without_the_token_names_the_refusal(cluster: LocalCluster) -> None:
    with pytest.raises(FabricError, match="did not accept the connection"):
        asyncio.run(connect(cluster.nats.address, timeout=3))
    assert asyncio.run(_accepted(cluster.nats.url))  # and the next good client gets in
