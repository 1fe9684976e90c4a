"""A node agent over a real nats-server keeps a stateful task's checkpoints in the fabric's
``fades_state`` bucket, owned by its name; when another node claims the task there (a move
while this one was partitioned), the agent's instance is fenced and stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fades.bus.nats import NatsBus
from fades.errors import FabricConflict
from fades.fabric.connect import FabricSettings
from fades.node.agent import NodeAgent
from fades.state.kv import BUCKET, KvCheckpoints, pack, unpack

COUNTER = """
count = 0
def main(data, params):
    global count
    count += 1
    return count
"""


def test_agent_checkpoints_in_the_fabric_and_is_fenced(
    nats_server: Any, prepare_home: Callable[..., Path]
) -> None:
    home = prepare_home(functions={"counter": COUNTER}, readings=False)

    async def main() -> None:
        agent = NodeAgent(
            "edge1", home, FabricSettings(url=nats_server.url), heartbeat_s=0.5, ingest=False
        )
        await agent.start()
        bus = await NatsBus.connect(nats_server.url, name="test-peer", timeout=30)
        try:
            orc = agent.require_node().orchestrator
            assert isinstance(orc.checkpoints, KvCheckpoints) and orc.node_name == "edge1"
            orc.submit(
                {
                    "credentials": {"tenant": "facilities", "task_id": "kv1"},
                    "inputs": {"x": 1},
                    "function": {
                        "artifact": "counter",
                        "memory_mib": 32,
                        "mode": "persistent",
                        "period_s": 0.05,
                        "state": {"checkpoint": "every"},
                    },
                }
            )
            kv = await bus.kv(BUCKET)
            deadline = time.monotonic() + 90
            while True:  # edge1 owns the task and has written checkpoints
                e = await kv.get("kv1")
                if e is not None and unpack(e.value)[1] is not None and e.revision >= 3:
                    break
                assert time.monotonic() < deadline, "no checkpoint in fades_state"
                await asyncio.sleep(0.05)
            # edge2 takes the task over (compare-and-set on the revision, as a claim does;
            # edge1 may write another checkpoint in between: read again and retry)
            while True:
                owner, sealed = unpack(e.value)
                assert owner == "edge1"
                try:
                    await kv.update("kv1", pack("edge2", sealed), e.revision)
                    break
                except FabricConflict:
                    assert time.monotonic() < deadline, "the takeover never won its CAS"
                    e = await kv.get("kv1")
                    assert e is not None
            while not orc.get("kv1").done:
                assert time.monotonic() < deadline, "edge1 was not fenced"
                await asyncio.sleep(0.05)
            rec = orc.get("kv1")
            assert rec.error_kind == "Fenced", rec
            assert "task moved: another instance holds it (node edge2)" in (rec.error or "")
            e2 = await kv.get("kv1")
            assert e2 is not None and unpack(e2.value)[0] == "edge2"  # not overwritten
        finally:
            await bus.close()
            await agent.stop()

    asyncio.run(main())
