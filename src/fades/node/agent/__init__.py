"""The node agent: one edge node on the fabric, over any :class:`~fades.bus.base.Bus`.

It wraps a :class:`fades.node.Node` (its folder, orchestrator, broker and function store)
and runs one job per module:

* :mod:`.registry`: the registry entry in ``fades_nodes``, re-put every heartbeat;
* :mod:`.intake`: tasks from the durable consumer ``node-<name>``, pinned to the digest the
  controller resolved, artifacts fetched through :mod:`fades.fabric.sync`, acked once held;
* :mod:`.outbox`: every finished or failed task's :class:`~fades.outcome.Outcome` on
  ``fades.result.<name>``, at least once, through the outbox in ``tasks.db``;
* :mod:`.query`: remote retrieval and ping (request/reply);
* :mod:`.ingest`: MQTT sensor ingest (over NATS);
* :mod:`fades.pipelines.engine`: the stages of pipelines planned onto this node.

At an edge site the agent connects to the site's leaf server (``FADES_SITE``, with
``FADES_NATS_DOMAIN=hub``): ingest, the tasks it holds and its outbox (results go to the site
stream ``FADES_UP`` through :meth:`~fades.bus.base.Bus.publish_up`) keep working while the
uplink is cut, and :class:`~fades.fabric.forward.UpForwarder` sends what the site stored up
to the hub, acking each message only once the hub stored it; heartbeats and task fetches
fail with bounded timeouts meanwhile and resume by themselves.

This module holds the lifecycle: start (connect, open the node, register, consume), stop
(stop intake, let running tasks finish, deliver their results, put ``stopping``), and the
CLI entry :func:`run_agent`. Blocking work runs in threads, so the event loop keeps
heartbeating; every loop rides out a fabric restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fades import paths
from fades.aiostop import cancel_all, wait_for
from fades.bus.base import Bus
from fades.bus.nats import NatsBus
from fades.devices.registry import node_devices
from fades.errors import FabricError
from fades.fabric.connect import FabricSettings
from fades.fabric.forward import UpForwarder
from fades.fabric.repository import ArtifactRepository
from fades.fabric.retry import retrying
from fades.fabric.streams import ensure_streams
from fades.fabric.subjects import check_token
from fades.fabric.sync import ArtifactSync
from fades.node import Node
from fades.node.agent.ingest import Ingest
from fades.node.agent.intake import ACK_WAIT_S, Intake
from fades.node.agent.outbox import Outbox
from fades.node.agent.query import QueryServer
from fades.node.agent.registry import DATA_EVERY, Registry, memory_mib
from fades.pipelines.engine import PipelineEngine
from fades.state.kv import KvCheckpoints
from fades.state.seal import state_key

__all__ = ["ACK_WAIT_S", "DATA_EVERY", "NodeAgent", "memory_mib", "run_agent"]

log = logging.getLogger("fades.node.agent")

#: bound on the fabric set-up at start
START_TIMEOUT_S = 15.0


class NodeAgent:
    """One node on the fabric.

    Args:
        name: node name (a subject token: letters, digits, ``_``, ``-``).
        home: the node folder (``None``: ``FADES_HOME``).
        settings: where NATS is and how to authenticate (used when no ``bus`` is given).
        heartbeat_s: seconds between registry puts.
        labels: free-form labels reported in the registry.
        capacity: tasks run at the same time (default: ``node.yaml`` or 2).
        ingest: run the MQTT sensor ingest if :mod:`fades.sensors.ingest` is available.
        connect_timeout: how long to wait for NATS at start.
        bus: a connected bus to use instead (e.g. a ``MemoryBus``); the agent closes it on stop.
    """

    def __init__(
        self,
        name: str,
        home: str | Path | None,
        settings: FabricSettings | None = None,
        *,
        heartbeat_s: float = 2.0,
        labels: dict[str, str] | None = None,
        capacity: int | None = None,
        ingest: bool = True,
        connect_timeout: float = 10.0,
        bus: Bus | None = None,
    ) -> None:
        self.name = check_token(name)
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat must be positive, got {heartbeat_s}")
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if settings is None and bus is None:
            settings = FabricSettings.from_env()
        self.home = home
        self.settings = settings
        self.heartbeat_s = heartbeat_s
        self.labels = dict(labels or {})
        self.capacity = capacity
        self.connect_timeout = connect_timeout
        self.node: Node | None = None
        #: the devices declared in the node folder, as put in the registry (fades.devices)
        self.devices: list[dict[str, Any]] = []
        self.bus: Bus | None = bus
        self.repo: ArtifactRepository | None = None
        self.checkpoints: KvCheckpoints | None = None
        self.sync: ArtifactSync | None = None
        #: counters for logs and tests: received, accepted, refused, duplicates, published
        self.counters: dict[str, int] = dict.fromkeys(
            ("received", "accepted", "refused", "duplicates", "published"), 0
        )
        self.started_at = 0.0
        self.ready = False
        self.stopping = False
        self.registry = Registry(self)
        self.intake = Intake(self)
        self.outbox = Outbox(self)
        self.query = QueryServer(self)
        self.ingest = Ingest(self, ingest)
        self.pipelines = PipelineEngine(self)
        self._tasks: list[asyncio.Task[None]] = []
        #: at a site: what the site stored for the hub goes up (fades.fabric.forward)
        self.forwarder: UpForwarder | None = None
        self._forwarding: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def site(self) -> str | None:
        """The edge site this agent is at (its leaf server's JetStream domain), if any."""
        return self.settings.site if self.settings is not None else None

    @property
    def where(self) -> str:
        return self.settings.url if self.settings is not None else type(self.bus).__name__

    def require_node(self) -> Node:
        if self.node is None:
            raise FabricError(f"node agent {self.name} is not started")
        return self.node

    def require_bus(self) -> Bus:
        if self.bus is None:
            raise FabricError(f"node agent {self.name} is not connected")
        return self.bus

    def require_sync(self) -> ArtifactSync:
        if self.sync is None:
            raise FabricError("the artifact repository is not open")
        return self.sync

    @property
    def seq(self) -> int:
        return self.registry.seq

    # --- lifecycle ---------------------------------------------------------------------------
    async def open_fabric(self) -> None:
        """Create the streams (idempotent) and open the repository."""
        bus = self.require_bus()
        await ensure_streams(bus)
        if self.site is not None and isinstance(bus, NatsBus):
            await bus.ensure_up()  # the site stream the hub sources, before the first result
        self.repo = await ArtifactRepository.open(bus)
        self.sync = ArtifactSync(self.repo, self.require_node().functions, f"node {self.name}")

    async def start(self) -> None:
        """Connect, open the node, register, and start consuming tasks.

        Raises:
            FabricError: NATS is unreachable or refused us; FadesError: the node folder is bad.
        """
        self.outbox.bind()
        self.started_at = time.time()
        try:
            if self.bus is None:
                self.bus = await NatsBus.connect(
                    self.settings, name=f"fades-node-{self.name}", timeout=self.connect_timeout
                )
            # (a hub server restarting or electing leaders: tried again for a while)
            self.checkpoints = await retrying(
                f"node {self.name}: the checkpoint bucket",
                lambda: wait_for(self._open_checkpoints(), START_TIMEOUT_S),
                log,
            )
            self.node = await asyncio.to_thread(self._open_node)
            self.devices = await asyncio.to_thread(node_devices, self.node, self.name)
            try:
                await retrying(
                    f"node {self.name}: the fabric's streams and repository",
                    lambda: wait_for(self.open_fabric(), START_TIMEOUT_S),
                    log,
                )
            except TimeoutError as exc:
                raise FabricError(
                    f"node {self.name}: the fabric at {self.where} did not answer a JetStream "
                    "request; is JetStream enabled on that server?"
                ) from exc
            await self.registry.claim_name()  # before taking any of that name's tasks
            await self.query.start()
            await self.ingest.start()
            await self.registry.refresh_data()
            await self.registry.beat()  # registration
            await self.outbox.flush()  # results left undelivered by an earlier run
        except BaseException:
            await self._teardown()
            raise
        self._tasks = [
            asyncio.create_task(self.outbox.loop()),
            asyncio.create_task(self.registry.loop()),
            asyncio.create_task(self.intake.loop()),
        ]
        bus = self.require_bus()
        if isinstance(bus, NatsBus) and bus.settings.site:
            self.forwarder = UpForwarder(bus)
            self._forwarding = asyncio.create_task(self.forwarder.run(), name="fades-up-forward")
        await self.pipelines.start()
        self.ready = True
        log.info("node %s ready on %s", self.name, self.where)

    async def _open_checkpoints(self) -> KvCheckpoints:
        """Stateful tasks keep their checkpoints in the fabric's ``fades_state`` bucket."""
        home = Path(self.home).expanduser() if self.home is not None else paths.home()
        token = self.settings.token if self.settings is not None else None
        key = await asyncio.to_thread(state_key, home, fabric_secret=token)
        return await KvCheckpoints.open(self.require_bus(), key)

    def _open_node(self) -> Node:
        node = Node(self.home, capacity=self.capacity, autostart=False)
        try:
            if self.checkpoints is not None:
                node.orchestrator.checkpoints = self.checkpoints
            node.orchestrator.node_name = self.name
            node.orchestrator.on_finish.append(self.outbox.on_finish)
            node.orchestrator.start()
        except BaseException:
            node.close()
            raise
        return node

    async def stop(self) -> None:
        """Stop intake, let running tasks finish, deliver their results, put ``stopping``."""
        if self._stopped:
            return
        self.stopping = True
        self.ready = False
        outbox_loop, heartbeat, intake = self._tasks or (None, None, None)
        await _cancel(intake, heartbeat)
        await self.pipelines.stop()
        await self.registry.last_beat()  # stopping: true, so the controller sends nothing more
        await self.ingest.stop()
        if self.node is not None:
            await asyncio.to_thread(self.node.orchestrator.drain)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await wait_for(self.outbox.flush(), 10.0)
        await _cancel(outbox_loop)
        await self.registry.last_beat()  # final entry: stopping, load drained
        await self._teardown()
        log.info("node %s stopped", self.name)

    async def _teardown(self) -> None:
        self.stopping = True
        self._stopped = True
        await _cancel(*self._tasks)
        self._tasks = []
        if self._forwarding is not None:
            await _cancel(self._forwarding)
            self._forwarding = None
        await self.pipelines.stop()
        await self.ingest.stop(5.0)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await wait_for(self.bus.close(), 5.0)
        if self.node is not None:
            node, self.node = self.node, None
            await asyncio.to_thread(node.close)

    async def run_forever(self, stop_event: asyncio.Event) -> None:
        """Start, serve until ``stop_event`` is set, then stop."""
        await self.start()
        try:
            await stop_event.wait()
        finally:
            await self.stop()


async def _cancel(*tasks: asyncio.Task[None] | None) -> None:
    await cancel_all(tasks)


def run_agent(
    name: str,
    home: str | Path | None,
    settings: FabricSettings,
    *,
    heartbeat_s: float = 2.0,
    labels: dict[str, str] | None = None,
    capacity: int | None = None,
    ingest: bool = True,
    on_ready: Callable[[NodeAgent], None] | None = None,
    connect_timeout: float = 10.0,
) -> None:
    """Run a node agent until SIGINT or SIGTERM, then stop it cleanly (the CLI's entry)."""
    agent = NodeAgent(
        name,
        home,
        settings,
        heartbeat_s=heartbeat_s,
        labels=labels,
        capacity=capacity,
        ingest=ingest,
        connect_timeout=connect_timeout,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.start()
        try:
            if on_ready is not None:
                on_ready(agent)
            await stop.wait()
        finally:
            await agent.stop()

    from fades.loops import runner

    runner()(main())
