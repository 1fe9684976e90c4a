"""A test bed for the controller: one background event loop that hosts the controller (with
its HTTP API on a real loopback socket) and real node agents (:class:`NodeAgent`), driven from
synchronous tests.

Where a test needs a node that is registered but takes no tasks (to see what the controller
dispatched, or to hand it an outcome of the test's choosing), :class:`Registration` writes the
node's registry entry and heartbeats to the bucket, and :meth:`Bed.publish_outcome` puts an
outcome on the results stream: the wire, not a second implementation of the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import wasmtime

from fades.bus.nats import NatsBus
from fades.client import FadesClient
from fades.cluster import LocalCluster
from fades.controller import Controller
from fades.controller.server import serve
from fades.fabric import EmbeddedNats, FabricSettings, connect
from fades.fabric.protocol import DataHeld, NodeInfo, NodeLoad
from fades.fabric.streams import ensure_streams, nodes_bucket
from fades.fabric.subjects import TASKS_STREAM, result_subject, task_subject
from fades.functions.keys import SigningKey, public_pem
from fades.node.agent import NodeAgent
from fades.outcome import Outcome

T = TypeVar("T")

#: the smallest core module the repository accepts (memory, fades_alloc, fades_run)
CORE_WASM = bytes(
    wasmtime.wat2wasm(
        '(module (memory (export "memory") 1)'
        ' (func (export "fades_alloc") (param i32) (result i32) (i32.const 1024))'
        ' (func (export "fades_run") (param i32 i32) (result i32) (i32.const 0)))'
    )
)

FACILITIES = "token-facilities-0123"
VISITOR = "token-visitor-0123456"
TOKENS = {FACILITIES: "facilities", VISITOR: "visitor"}


def held(location: str, sensor_type: str = "temperature", rows: int = 100) -> DataHeld:
    now = time.time()
    return DataHeld(
        connector="sqlite",
        location=location,
        sensor_type=sensor_type,
        rows=rows,
        first_ts=now - 86400,
        last_ts=now,
    )


class Registration:
    """A node's entry in the registry bucket, re-put every ``heartbeat_s``; it takes no tasks
    (they wait in the node's stream)."""

    def __init__(
        self,
        url: str,
        name: str,
        data: list[DataHeld],
        load: NodeLoad | None,
        heartbeat_s: float,
        trusted: list[str] | None = None,
    ) -> None:
        self.url, self.name, self.data, self.trusted = url, name, data, trusted
        self.load = load or NodeLoad()
        self.heartbeat_s = heartbeat_s
        self.seq = 0
        self.started_at = time.time()
        self.stopping = False
        self._beats: asyncio.Task[None] | None = None

    async def start(self) -> Registration:
        self.bus = await NatsBus.connect(self.url, name=f"registration-{self.name}")
        self.js = self.bus.js
        await ensure_streams(self.bus)
        self.kv = await nodes_bucket(self.bus)
        await self.beat()
        self._beats = asyncio.create_task(self._loop())
        return self

    async def beat(self) -> None:
        self.seq += 1
        info = NodeInfo(
            name=self.name,
            arch="x86_64",
            cores=2,
            memory_mib=1024,
            runtimes=["fades-py/1", "fades-core/1"],
            data=self.data,
            load=self.load,
            started_at=self.started_at,
            heartbeat_at=time.time(),
            heartbeat_s=self.heartbeat_s,
            seq=self.seq,
            stopping=self.stopping,
            trusted_signers=self.trusted,
        )
        await self.kv.put(self.name, info.encode())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            with contextlib.suppress(Exception):
                await self.beat()

    async def pause(self) -> None:
        """Go silent without saying so (a crashed or cut-off node)."""
        if self._beats is not None:
            self._beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beats
            self._beats = None

    async def stop(self, clean: bool = True) -> None:
        await self.pause()
        if clean:
            self.stopping = True
            with contextlib.suppress(Exception):
                await self.beat()
        await self.bus.close()

    async def dispatched(self) -> list[dict[str, Any]]:
        """The task envelopes the controller published for this node (read, not consumed)."""
        import json

        state = (await self.js.stream_info(TASKS_STREAM)).state
        out: list[dict[str, Any]] = []
        for seq in range(state.first_seq, state.last_seq + 1):
            with contextlib.suppress(Exception):  # a gap (deleted message)
                msg = await self.js.get_msg(TASKS_STREAM, seq)
                if msg.subject == task_subject(self.name) and msg.data:
                    out.append(json.loads(msg.data))
        return out


class Bed:
    """Controller + node agents in a loop thread; the test talks HTTP to the controller."""

    def __init__(self, nats: EmbeddedNats, root: Path, key: SigningKey) -> None:
        self.nats = nats
        self.root = root
        self.key = key
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.controller: Controller | None = None
        self.url = ""
        self.agents: list[NodeAgent] = []
        self.registrations: list[Registration] = []
        self._listeners: list[Any] = []
        self._stop: asyncio.Event | None = None
        self._serving: Any = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 180.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def controller_home(self) -> Path:
        home = self.root / "controller"
        (home / "trusted").mkdir(parents=True, exist_ok=True)
        (home / "trusted" / f"{self.key.id}.pub").write_bytes(public_pem(self.key.public))
        return home

    def start_controller(self, down_after: float = 10.0, **kwargs: Any) -> Controller:
        """Start a controller on the bed's home and serve its API on a free port."""
        ctl = Controller(
            self.controller_home(),
            nats=self.nats.url,
            tokens=TOKENS,
            down_after=down_after,
            cloud_capacity=1,
            **kwargs,
        )
        ready: asyncio.Future[str] = self.loop.create_future()

        async def go() -> None:
            self._stop = asyncio.Event()
            self._serving = asyncio.ensure_future(
                serve(ctl, "127.0.0.1", 0, on_ready=ready.set_result, stop=self._stop)
            )
            done, _ = await asyncio.wait(
                {self._serving, asyncio.ensure_future(asyncio.shield(ready))},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self._serving in done:
                await self._serving  # it failed at start: raise why

        self.run(go())
        self.url = ready.result()
        self.controller = ctl
        return ctl

    def stop_controller(self) -> None:
        if self.controller is None:
            return

        async def go() -> None:
            assert self._stop is not None
            self._stop.set()
            await self._serving

        self.run(go())
        self.controller = None

    def agent(self, name: str, home: Path, **kwargs: Any) -> NodeAgent:
        """A real node agent on ``home``, started (heartbeat 0.2 s, one worker, no ingest)."""
        opts: dict[str, Any] = {"heartbeat_s": 0.2, "ingest": False, "capacity": 1} | kwargs
        agent = NodeAgent(name, home, FabricSettings(self.nats.url), **opts)
        self.run(agent.start())
        self.agents.append(agent)
        return agent

    def register(
        self,
        name: str,
        data: list[DataHeld],
        load: NodeLoad | None = None,
        heartbeat_s: float = 0.2,
        trusted: list[str] | None = None,
    ) -> Registration:
        """A registered node that takes no tasks (see :class:`Registration`); ``trusted``:
        the signer ids its entry lists (None: it does not say)."""
        reg = Registration(self.nats.url, name, data, load, heartbeat_s, trusted)
        self.run(reg.start())
        self.registrations.append(reg)
        return reg

    def listen(self, subject: str) -> list[bytes]:
        """Every plain message on ``subject`` from now on (a copy; it answers nothing)."""
        seen: list[bytes] = []

        async def go() -> None:
            nc = await connect(self.nats.url, name=f"listener-{subject}")
            self._listeners.append(nc)

            async def cb(msg: Any) -> None:
                seen.append(msg.data)

            await nc.subscribe(subject, cb=cb)
            await nc.flush()

        self.run(go())
        return seen

    def publish_outcome(self, node: str, out: Outcome | bytes, msg_id: str) -> None:
        """Put an outcome on the results stream as node ``node`` would."""
        data = out.encode() if isinstance(out, Outcome) else out

        async def go() -> None:
            nc = await connect(self.nats.url, name="outcome-publisher")
            try:
                await nc.jetstream().publish(
                    result_subject(node), data, headers={"Nats-Msg-Id": msg_id}
                )
            finally:
                await nc.close()

        self.run(go())

    def client(self, token: str = FACILITIES) -> FadesClient:
        return FadesClient(self.url, token, timeout=20.0)

    def __enter__(self) -> Bed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stop_controller()
            for a in self.agents:
                with contextlib.suppress(Exception):
                    self.run(a.stop())
            for r in self.registrations:
                with contextlib.suppress(Exception):
                    self.run(r.stop(clean=False))
            for nc in self._listeners:
                with contextlib.suppress(Exception):
                    self.run(nc.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture
def bed(nats_server: EmbeddedNats, tmp_path: Path, signing_key: SigningKey) -> Iterator[Bed]:
    """A controller bed on the test's nats-server (``nats_server`` of tests/conftest.py)."""
    with Bed(nats_server, tmp_path, signing_key) as b:
        yield b


# --- two controllers over one cluster (test_replicas.py, test_client_failover.py) ------------
def pair_task(cluster: LocalCluster, task_id: str | None = None) -> dict[str, Any]:
    """A task for the pair's node: mean_core over its first room's temperature."""
    creds: dict[str, Any] = {"tenant": "facilities"}
    if task_id is not None:
        creds["task_id"] = task_id
    room = cluster.rooms("edge1")[0]
    return {
        "credentials": creds,
        "data": [{"name": "t", "select": {"location": room, "sensor_type": "temperature"}}],
        "function": {"artifact": "mean_core", "time_budget_ms": 20000},
    }


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real cluster (one module each) with two controllers (``controller1``,
    ``controller2``) over one hub, and one node, ``edge1``."""
    home = tmp_path_factory.mktemp("pair") / "cluster"
    cluster = LocalCluster(
        home, nodes=1, days=0.02, sensors=False, heartbeat_s=0.3, down_after_s=3.0, controllers=2
    )
    cluster.prepare()
    # finalise what earlier tests left (closed event loops' tasks) now: a finaliser that runs
    # inside ast.parse (building the cluster's functions) trips CPython 3.11's AST recursion
    # check ("AST constructor recursion depth mismatch")
    gc.collect()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
