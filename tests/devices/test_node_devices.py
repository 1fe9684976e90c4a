"""A node agent puts its declared devices in its registry entry; a bad devices.yaml stops it
with one line (real nats-server, real node agent)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fades.bus.nats import NatsBus
from fades.errors import DeviceSpecError
from fades.fabric import EmbeddedNats, FabricSettings
from fades.fabric.protocol import NodeInfo
from fades.fabric.streams import nodes_bucket
from fades.node.agent import NodeAgent

DECL = {
    "sensors": [{"device": "m1-vib", "location": "machine1", "type": "vibration", "unit": "mm/s"}],
    "actuators": [{"device": "fan-1", "location": "room1", "type": "fan",
                   "commands": ["on", "off"], "tenants": ["facilities"]}],
}  # fmt: skip


def test_the_registry_entry_carries_the_devices(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    home = tmp_path / "node"
    home.mkdir()
    (home / "devices.yaml").write_text(yaml.safe_dump(DECL))
    (home / "policy.yaml").write_text(yaml.safe_dump(
        {"tenants": {"facilities": {"locations": "*", "sensor_types": "*"}}}))  # fmt: skip

    async def main() -> NodeInfo:
        agent = NodeAgent("edge1", home, FabricSettings(nats_server.url), ingest=False,
                          heartbeat_s=0.5)  # fmt: skip
        await agent.start()
        try:
            bus = await NatsBus.connect(FabricSettings(nats_server.url))
            try:
                entry = await (await nodes_bucket(bus)).get("edge1")
                assert entry is not None
                info: NodeInfo = NodeInfo.decode(entry.value)
                return info
            finally:
                await bus.close()
        finally:
            await agent.stop()

    info = asyncio.run(main())
    by_name = {d["device"]: d for d in info.devices}
    assert by_name["fan-1"]["commands"] == ["on", "off"]
    assert by_name["fan-1"]["tenants"] == ["facilities"]
    assert by_name["fan-1"]["readers"] == ["facilities"]
    assert by_name["m1-vib"]["topic"] == "sensors/edge1/machine1/vibration"


def test_a_bad_declaration_stops_the_node_in_one_line(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    home = tmp_path / "node"
    home.mkdir()
    bad = {"actuators": [DECL["actuators"][0] | {"commands": "on"}]}
    (home / "devices.yaml").write_text(yaml.safe_dump(bad))
    agent = NodeAgent("edge1", home, FabricSettings(nats_server.url), ingest=False)
    with pytest.raises(DeviceSpecError, match=r"actuators\[0\] \(fan-1\): commands must be"):
        asyncio.run(agent.start())
    assert agent.node is None
    proc = subprocess.run(
        [sys.executable, "-m", "fades", "node", "start", "--name", "edge1", "--data", str(home),
         "--nats", nats_server.url, "--no-ingest"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "devices.yaml: actuators[0] (fan-1): commands must be" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
