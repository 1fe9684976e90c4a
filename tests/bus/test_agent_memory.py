"""A real node agent (real orchestrator, wasmtime, SQLite) over MemoryBus, end to end.

The test plays the controller on a second connection to the same MemoryFabric: it uploads
artifacts through the repository, publishes TaskEnvelopes, consumes Outcomes, reads the
registry and calls the node's query and ping services.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import fades.functions.artifact as artifact_module
from fades.aiostop import wait_for
from fades.bus.base import Bus
from fades.bus.memory import MemoryBus, MemoryFabric
from fades.errors import AccessDenied, NodeUnavailable
from fades.fabric.protocol import NodeInfo, QueryRequest, TaskEnvelope, decode_query_reply
from fades.fabric.repository import ArtifactRepository
from fades.fabric.subjects import (
    NODES_BUCKET,
    RESULTS_STREAM,
    TASKS_STREAM,
    ping_subject,
    query_subject,
)
from fades.functions.artifact import Artifact
from fades.functions.build import build_python
from fades.functions.keys import SigningKey
from fades.node.agent import NodeAgent
from fades.outcome import Outcome
from fades.sandbox.wire import encode
from fades.task import DataOp

MEM = 32

V1 = """
def main(data, params):
    return {"n": len(data["t"]), "version": 1}
"""

V2 = """
def main(data, params):
    return {"n": len(data["t"]), "version": 2}
"""

NOISY = """
def main(data, params):
    print("looking at", len(data["t"]), "rows")
    raise ValueError("no good")
"""


def build(tmp: Path, name: str, source: str, key: SigningKey, tag: str = "") -> Artifact:
    src = tmp / f"src{tag}" / f"{name}.py"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(textwrap.dedent(source).lstrip())
    return build_python(src, key=key)


class Controller:
    """The controller's side of the wire, on its own connection."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seen: dict[str, Outcome] = {}
        self._it: Any = None

    async def open(self) -> Controller:
        await self.bus.stream(TASKS_STREAM, ["fades.task.>"])
        await self.bus.stream(RESULTS_STREAM, ["fades.result.>"])
        self._it = self.bus.consume(RESULTS_STREAM, "controller", "fades.result.>").__aiter__()
        return self

    async def submit(self, node: str, task: dict[str, Any], digest: str | None = None) -> str:
        tid = str(task["credentials"]["task_id"])
        env = TaskEnvelope(task=task, submitted_at=time.time(), digest=digest)
        await self.bus.publish(f"fades.task.{node}", env.encode(), msg_id=tid)
        return tid

    async def wait(self, task_id: str, timeout: float = 60.0) -> Outcome:
        deadline = time.monotonic() + timeout
        while task_id not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"no outcome for {task_id}; saw {list(self.seen)}")
            d = await wait_for(self._it.__anext__(), timeout)
            out = Outcome.decode(d.data)
            self.seen.setdefault(out.task_id, out)
            await d.ack()
        return self.seen[task_id]


@asynccontextmanager
async def cluster(
    home: Path, ingest: bool = False
) -> AsyncIterator[tuple[NodeAgent, Controller, ArtifactRepository]]:
    fabric = MemoryFabric()
    ctl_bus = MemoryBus(fabric)
    ctl = await Controller(ctl_bus).open()
    repo = await ArtifactRepository.open(ctl_bus)
    agent = NodeAgent("edge1", home, heartbeat_s=0.2, ingest=ingest, bus=MemoryBus(fabric))
    try:
        yield agent, ctl, repo
    finally:
        await agent.stop()
        await ctl_bus.close()


def test_agent_runs_pinned_tasks_serves_queries_and_registers_over_memory_bus(
    monkeypatch: pytest.MonkeyPatch,
    prepare_home: Callable[..., Path],
    make_task: Callable[..., dict[str, Any]],
    signing_key: SigningKey,
    runtime_artifact: Artifact,
    tmp_path: Path,
) -> None:
    policy = {
        "tenants": {
            "facilities": {"locations": "*", "sensor_types": "*"},
            "guest": {"locations": ["room2"], "sensor_types": ["humidity"]},
        }
    }
    home = prepare_home("n1", runtime=False, policy=policy)
    # v2 is a later build (manifests keep whole seconds): the build clock is injected
    built = time.time()
    clock = SimpleNamespace(time=lambda: built, time_ns=lambda: int(built * 1e9))
    monkeypatch.setattr(artifact_module, "time", clock)
    v1 = build(tmp_path, "count", V1, signing_key, "1")
    built += 1
    v2 = build(tmp_path, "count", V2, signing_key, "2")
    monkeypatch.undo()
    assert v2.manifest["created"] == v1.manifest["created"] + 1
    noisy = build(tmp_path, "noisy", NOISY, signing_key)

    async def main() -> None:
        async with cluster(home) as (agent, ctl, repo):
            await repo.put(runtime_artifact)
            await repo.put(v1)
            await repo.put(noisy)
            # submitted (and pinned to v1) while v1 is the newest 'count' ...
            pinned = await repo.resolve("count")
            assert pinned == v1.digest
            await ctl.submit("edge1", make_task("count", task_id="pin", memory_mib=MEM), pinned)
            # ... then v2 is uploaded before the node runs it
            await repo.put(v2)
            assert await repo.resolve("count") == v2.digest
            await agent.start()

            out = await ctl.wait("pin")
            assert out.status == "done", out
            assert out.result["version"] == 1 and out.digest == v1.digest
            assert out.node == "edge1" and out.attempts == 1 and out.bytes_read > 0
            assert agent.require_node().orchestrator.get("pin").digest == v1.digest

            # a bad task is refused with a failed outcome; the node keeps serving
            bad = make_task("count", task_id="bad", memory_mib=0)
            await ctl.submit("edge1", bad, v2.digest)
            out = await ctl.wait("bad")
            assert out.status == "failed" and out.error_kind == "TaskValidationError"
            assert "memory_mib" in (out.error or "") and out.attempts == 0

            # a pinned digest the repository does not hold: refused, naming it
            missing = "sha256:" + "0" * 64
            await ctl.submit("edge1", make_task("count", task_id="gone", memory_mib=MEM), missing)
            out = await ctl.wait("gone")
            assert out.status == "failed" and out.error_kind == "ArtifactError"
            assert missing in (out.error or "") and out.digest == missing

            # the function's traceback and logs travel in the outcome
            await ctl.submit("edge1", make_task("noisy", task_id="noisy", memory_mib=MEM))
            out = await ctl.wait("noisy")
            assert out.status == "failed" and out.error_kind == "FunctionCrashed"
            assert "no good" in (out.traceback or "") and "looking at" in (out.logs or "")
            assert out.digest == noisy.digest

            await ctl.submit("edge1", make_task("count", task_id="next", memory_mib=MEM))
            out = await ctl.wait("next")
            assert out.status == "done" and out.result["version"] == 2  # unpinned: newest

            # registry, ping and query over the same bus
            kv = await ctl.bus.kv(NODES_BUCKET)
            entry = await kv.get("edge1")
            assert entry is not None and NodeInfo.decode(entry.value).name == "edge1"
            pong = NodeInfo.decode(await ctl.bus.request(ping_subject("edge1"), b"{}"))
            assert pong.name == "edge1"
            ops = [DataOp.model_validate({"name": "everything"})]
            req = QueryRequest(tenant="facilities", data=ops, params={"k": 1})
            blob, meta = decode_query_reply(
                await ctl.bus.request(query_subject("edge1"), req.encode())
            )
            datasets, _ = agent.require_node().broker.fetch("facilities", ops)
            assert blob == bytes(encode(datasets, {"k": 1})) and meta.blob_bytes == len(blob)
            with pytest.raises(AccessDenied, match="guest"):
                denied = QueryRequest(tenant="guest", data=ops)
                await ctl.bus.request(query_subject("edge1"), denied.encode())

            assert agent.counters["accepted"] == 3 and agent.counters["refused"] == 2
            await agent.stop()
            entry = await kv.get("edge1")
            assert entry is not None and NodeInfo.decode(entry.value).stopping
            with pytest.raises(NodeUnavailable):  # its services left with its connection
                await ctl.bus.request(ping_subject("edge1"), b"{}", timeout=0.3)

    asyncio.run(main())


def test_sensor_readings_sent_on_the_bus_land_in_the_store_and_a_task_sees_them(
    prepare_home: Callable[..., Path],
    make_task: Callable[..., dict[str, Any]],
    signing_key: SigningKey,
    runtime_artifact: Artifact,
    tmp_path: Path,
) -> None:
    """Ingest needs no NATS client: readings sent with ``bus.send`` on the node's sensor
    subject are written into its readings store, and a task selecting them counts them."""
    home = prepare_home("n1", runtime=False)
    fn = build(tmp_path, "count", V1, signing_key)
    n = 5

    async def main() -> None:
        async with cluster(home, ingest=True) as (agent, ctl, repo):
            await repo.put(runtime_artifact)
            await repo.put(fn)
            await agent.start()
            assert agent.ingest.ingestor is not None
            now = time.time()
            for i in range(n):
                reading = {"ts": now - n + i, "value": 20.0 + i, "device": "room9-temperature"}
                await ctl.bus.send("sensors.edge1.room9.temperature", json.dumps(reading).encode())
            deadline = time.monotonic() + 30
            while agent.ingest.stats.get("written", 0) < n:
                assert time.monotonic() < deadline, agent.ingest.stats
                await asyncio.sleep(0.02)
            assert agent.ingest.stats["rejected"] == 0
            select = {"location": "room9", "sensor_type": "temperature"}
            task = make_task(
                "count", task_id="room9", memory_mib=MEM, data=[{"name": "t", "select": select}]
            )
            await ctl.submit("edge1", task)
            out = await ctl.wait("room9")
            assert out.status == "done", out
            assert out.result["n"] == n

    asyncio.run(main())
