"""The command path on an in-memory fabric (MemoryBus) beside the real one: a controller, a
real node agent declaring devices, and a device answering on the bus. Checks what the
cluster tests cannot see from outside: a command id is sent once, however often a
pipeline's stage event arrives."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import yaml

from fades.aiostop import wait_for
from fades.bus.memory import MemoryBus, MemoryFabric
from fades.controller import Controller
from fades.node.agent import NodeAgent
from fades.pipelines.protocol import StageEvent
from fades.pipelines.spec import parse_pipeline

TOKENS = {"t" * 16: "facilities"}
DECL = {"actuators": [{"device": "fan-1", "location": "room1", "type": "fan",
                       "commands": ["on", "off"], "tenants": ["facilities"]}]}  # fmt: skip


def test_commands_are_sent_once_per_id(tmp_path: Path) -> None:
    node_home = tmp_path / "node"
    node_home.mkdir()
    (node_home / "devices.yaml").write_text(yaml.safe_dump(DECL))

    async def scenario() -> None:
        fabric = MemoryFabric()
        ctl = Controller(tmp_path / "ctl", tokens=TOKENS, bus=MemoryBus(fabric),
                         cloud_capacity=1)  # fmt: skip
        await ctl.start()
        agent = NodeAgent("edge", node_home, bus=MemoryBus(fabric), heartbeat_s=0.1,
                          ingest=False, capacity=1)  # fmt: skip
        await agent.start()
        device = MemoryBus(fabric)
        received: list[dict[str, object]] = []

        async def on_set(subject: str, data: bytes) -> None:
            cmd = json.loads(data)
            received.append(cmd)
            state = {"power": cmd["command"]}
            await device.send("actuators.edge.fan-1.state", json.dumps(
                {"command_id": cmd["command_id"], "outcome": "applied", "state": state}
            ).encode())  # fmt: skip

        await device.subscribe("actuators.edge.fan-1.set", on_set)
        try:
            deadline = time.monotonic() + 60
            while not ctl.devices.devices("facilities"):
                assert time.monotonic() < deadline, "the node's devices never registered"
                await asyncio.sleep(0.02)
            svc = ctl.devices
            first = await svc.command("facilities", "edge", "fan-1", "on", command_id="c-1")
            again = await svc.command("facilities", "edge", "fan-1", "on", command_id="c-1")
            assert first["outcome"] == again["outcome"] == "applied"
            assert len(received) == 1 and received[0]["source"] == "api"
            # a state report without a command id updates the list
            await device.send("actuators.edge.fan-1.state", b'{"state": {"power": "off"}}')
            while svc.devices("facilities")[0]["state"] != {"power": "off"}:
                assert time.monotonic() < deadline + 30
                await asyncio.sleep(0.02)
            # a pipeline's finale: the same event twice -> one command
            spec = parse_pipeline({
                "name": "vent", "credentials": {"tenant": "facilities"},
                "stages": [{"name": "go", "function": {"artifact": "f"},
                            "actuate": {"device": "edge/fan-1"}}],
            })  # fmt: skip
            ev = StageEvent(pipeline="vent", run="r1", stage="go", node="edge", status="done",
                            result={"command": "on"}, at=time.time())  # fmt: skip
            svc.actuate(ev, spec)
            svc.actuate(ev, spec)
            pending = list(svc._tasks)
            assert len(pending) == 2  # both deliveries were taken up ...
            await wait_for(asyncio.gather(*pending), 60)  # ... and have ended
            audit = await svc.audit("facilities")
            from_pipeline = [a for a in audit if a["source"] == "pipeline"]
            assert len(from_pipeline) == 1 and from_pipeline[0]["command_id"] == "p-vent-r1-go-_"
            assert len(received) == 2
        finally:
            await agent.stop()
            await ctl.stop()

    asyncio.run(scenario())
