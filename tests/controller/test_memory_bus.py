"""The controller and a real node agent on one in-memory fabric (MemoryBus): no nats-server,
the same code paths (pinning, placement, dispatch, outcomes, the cloud path)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fades.bus.memory import MemoryBus, MemoryFabric
from fades.controller import Controller
from fades.functions.artifact import Artifact
from fades.functions.keys import SigningKey, public_pem
from fades.node.agent import NodeAgent

from .conftest import TOKENS
from .test_api import COUNT, artifact_of


def test_controller_and_agent_over_a_memory_bus(
    tmp_path: Path,
    prepare_home: Any,
    make_task: Any,
    runtime_artifact: Artifact,
    signing_key: SigningKey,
) -> None:
    node_home = prepare_home("edge", functions={"count": COUNT})
    home = tmp_path / "controller"
    (home / "trusted").mkdir(parents=True)
    (home / "trusted" / f"{signing_key.id}.pub").write_bytes(public_pem(signing_key.public))

    async def scenario() -> None:
        fabric = MemoryFabric()
        ctl = Controller(home, tokens=TOKENS, bus=MemoryBus(fabric), cloud_capacity=1)
        await ctl.start()
        agent = NodeAgent(
            "edge", node_home, bus=MemoryBus(fabric), heartbeat_s=0.1, ingest=False, capacity=1
        )
        await agent.start()
        try:
            deadline = time.monotonic() + 60
            while not ctl.registry.is_up("edge"):
                assert time.monotonic() < deadline, "the node never registered"
                await asyncio.sleep(0.02)
            await ctl.upload(runtime_artifact.to_bytes(), tenant="facilities")
            info = await ctl.upload(artifact_of(node_home, "count"), tenant="facilities")
            task = make_task("count", memory_mib=32)
            edge = await ctl.submit(task, tenant="facilities")
            cloud = await ctl.submit(
                make_task("count", memory_mib=32), tenant="facilities", where="cloud"
            )
            assert edge.node == "edge" and "data locality" in edge.placement
            e = await ctl.wait(edge.task_id, 60, tenant="facilities")
            k = await ctl.wait(cloud.task_id, 60, tenant="facilities")
            assert e.status == k.status == "done", (e, k)
            assert e.outcome is not None and k.outcome is not None
            assert e.outcome.result == k.outcome.result and e.outcome.result["rows"] > 0
            assert e.digest == k.digest == info.digest
            assert e.outcome.digest == info.digest and k.outcome.node == "cloud"
        finally:
            await agent.stop()
            await ctl.stop()

    asyncio.run(scenario())
