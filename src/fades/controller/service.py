"""The controller: node registry, function repository, placement, and the task lifecycle.

One :class:`Controller` runs in an asyncio loop (the HTTP API shares it). A submitted task is
validated, its function pinned to a digest, placed (named node, or by the configured
:mod:`placer <fades.placers>`), recorded in ``controller.db`` (off the loop) and only then
handed to :mod:`dispatch <fades.controller.dispatch>`; outcomes come back through
:mod:`results <fades.controller.results>`. A cloud task runs here (:mod:`.cloud`) on the
pinned digest.

After a restart the controller re-publishes tasks it had accepted but not dispatched,
re-runs unfinished cloud tasks, and consumes the outcomes published while it was down.

Every write to ``controller.db`` goes through the controller log
(:mod:`fades.controller.replica`), so several controllers can serve one cluster; the duties
that must run once (the dispatch sweep, cloud re-runs, failover) run on the leading one
(:mod:`fades.controller.leader`).

The controller's public methods in one place; dispatch, results, publishing, bodies, cancel,
the controller log (replica, logops, pipelog) and the lead (leader) are their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from fades.aiostop import cancel_all, wait_for
from fades.bus.base import Bus
from fades.bus.nats import NatsBus
from fades.controller.auth import Tokens
from fades.controller.cloud import CloudRunner
from fades.controller.commits import GroupCommitter
from fades.controller.digests import DigestCache
from fades.controller.dispatch import HEADER_ROOM, Dispatcher, envelope
from fades.controller.failover import run_failover
from fades.controller.leader import Leadership, while_leading
from fades.controller.logops import add_task_args
from fades.controller.lookups import ExistsLookup, read
from fades.controller.measure import Measurements
from fades.controller.metrics import Metrics
from fades.controller.migrate import moving
from fades.controller.models import CancelReceipt, FunctionInfo, NodeView, SubmitReceipt, Where
from fades.controller.offline import place_offline
from fades.controller.pipelog import LoggedPipelineStore, follow_plans
from fades.controller.pipestore import PipelineStore
from fades.controller.publishing import Publisher, name_of, version_of
from fades.controller.registry import DOWN_AFTER_S, Registry
from fades.controller.replica import DirectLog, Log, StreamLog
from fades.controller.results import Recorder, consume
from fades.controller.store import ControllerStore, PendingTask, TaskRecord
from fades.errors import (
    ControllerError,
    DuplicateTask,
    FadesError,
    Forbidden,
    NodeUnavailable,
    NoPlacement,
    PayloadTooLarge,
    TaskValidationError,
    UnknownNode,
)
from fades.fabric.connect import FabricSettings
from fades.fabric.repository import ArtifactRepository
from fades.fabric.retry import retrying
from fades.fabric.streams import ensure_streams, nodes_bucket
from fades.functions.keys import TrustStore
from fades.functions.store import FunctionStore
from fades.placers import Placement, Placer, Site, placer
from fades.placers.locality import draining_refusal
from fades.task import Task, parse_task

log = logging.getLogger("fades.controller")

#: the fabric's message limit assumed before the first connection (NATS' default)
DEFAULT_MAX_PAYLOAD = 1024 * 1024
#: the longest wire id: a task id cut to 47 characters, a dot and 16 hex digits
WIRE_ID_MAX = 64

# (Controller.list shadows the builtin inside the class body)
NodeViews = list[NodeView]
FunctionInfos = list[FunctionInfo]


class Controller:
    """The cloud side of fades. Call its methods from the event loop it was started in.

    Args:
        home: folder for ``controller.db``, ``trusted/`` (keys uploads must be signed with)
            and ``artifacts/`` (verified artifacts for the cloud path).
        nats: where the fabric is (default: ``FADES_NATS_*`` environment, else localhost).
        tokens: bearer token -> tenant (used by the HTTP API).
        down_after: seconds without a heartbeat before a node is marked down.
        cloud_capacity: cloud tasks run at the same time (default: CPU count).
        name: the NATS connection name.
        placer: a :class:`~fades.placers.Placer` or its name (default ``locality``).
        bus: a connected bus to use instead of connecting to NATS (e.g. a ``MemoryBus``);
            the controller closes it on stop.
        replicated: write through the controller log on the fabric, so other controllers
            can serve the same cluster (default: ``FADES_CTL_LOG=on``/``off``, else off: a
            lone controller writes straight to its database, and keeps accepting tasks
            while NATS is away). A bus that is not NATS always writes directly.
    """

    def __init__(
        self,
        home: str | Path,
        *,
        nats: FabricSettings | str | None = None,
        tokens: Tokens | Mapping[str, str] | None = None,
        down_after: float = DOWN_AFTER_S,
        cloud_capacity: int | None = None,
        name: str = "fades-controller",
        placer: Placer | str = "locality",
        bus: Bus | None = None,
        replicated: bool | None = None,
    ) -> None:
        if replicated is None:
            flag = os.environ.get("FADES_CTL_LOG", "off").strip().lower()
            replicated = flag in ("on", "1", "true", "yes")
        self.replicated = replicated
        self.home = Path(home).expanduser()
        self.home.mkdir(parents=True, exist_ok=True)
        self.settings = nats if isinstance(nats, FabricSettings) else FabricSettings.from_env(nats)
        self.tokens = tokens if isinstance(tokens, Tokens) else Tokens(tokens)
        self.down_after = down_after
        self.cloud_capacity = cloud_capacity or os.cpu_count() or 1
        self.name = name
        self.placer: Placer = _placer(placer)
        #: RTTs, loads and queue models the Nimbus placer reads (fades.controller.measure)
        self.measure = Measurements(cloud_workers=self.cloud_capacity)
        attach = getattr(self.placer, "attach", None)
        if callable(attach):
            attach(self.measure)
        self.metrics = Metrics()
        self.functions = FunctionStore(
            self.home / "artifacts", TrustStore.from_dir(self.home / "trusted")
        )
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self._store: ControllerStore | None = None
        self._given_bus = bus
        self._bus: Bus | None = None
        self._repo: ArtifactRepository | None = None
        self._registry: Registry | None = None
        self._cloud: CloudRunner | None = None
        self._recorder: Recorder | None = None
        self._dispatcher: Dispatcher | None = None
        self._publisher: Publisher | None = None
        self._log: Log | None = None
        self._leader: Leadership | None = None
        self._digests: DigestCache | None = None
        self._exists: ExistsLookup | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._cloud_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        from fades.pipelines.service import PipelineService  # (it imports the controller)

        self.pipelines = PipelineService(self)
        from fades.devices.commands import DeviceService

        self.devices = DeviceService(self)

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> Controller:
        """Connect, open the streams, bucket and repository, and start consuming outcomes.

        Raises:
            FabricError: NATS cannot be reached.
        """
        if self._bus is not None:
            return self
        store = self._store = await asyncio.to_thread(ControllerStore, self.home / "controller.db")
        self._exists = ExistsLookup(store.existing, store._lock)
        try:
            bus = self._given_bus or await NatsBus.connect(self.settings, name=self.name)
        except BaseException:
            store.close()
            self._store = None
            raise
        try:
            # connected, but JetStream may not answer yet (a hub electing its leaders after
            # a restart): bounded retries rather than a controller that exits
            await _retrying("the fabric's streams", lambda: ensure_streams(bus))
            kv = await _retrying("the node registry", lambda: nodes_bucket(bus))
            self._repo = await _retrying(
                "the function repository", lambda: ArtifactRepository.open(bus)
            )
            self._registry = Registry(
                kv, self.down_after, lambda: int(getattr(bus, "reconnects", 0))
            )
            await _retrying("the node registry", self._registry.start)
        except BaseException:
            if self._registry is not None:
                await self._registry.stop()
                self._registry = None
            await bus.close()
            store.close()
            self._store = None
            raise
        self._bus = bus
        self.max_payload = bus.max_payload or DEFAULT_MAX_PAYLOAD
        self._publisher = Publisher(
            self.home / "trusted", self.functions, store, self._repo, lambda: self.connected
        )
        self._publisher.up_nodes = lambda: [e.info for e in self.registry.up()]
        self._cloud = CloudRunner(bus, self._repo, self.functions, self.cloud_capacity)
        try:
            if self.replicated and isinstance(bus, NatsBus):
                self._log = StreamLog(store, bus)
            else:
                self._log = DirectLog(store, GroupCommitter(store))
            await self._log.start()
            self._leader = Leadership(bus, f"{self.name}.{os.getpid()}", self._elected)
            await self._leader.start()
        except BaseException:
            await self.stop()
            raise
        writes = self._log
        self._publisher.record = lambda art, tenant: writes.write(
            "publish_function",
            {
                "name": name_of(art),
                "tenant": tenant,
                "digest": art.digest,
                "created_ns": version_of(art)[0],
                "at": time.time(),
            },
        )
        recorder = self._recorder = Recorder(store, self.metrics, self._log)
        recorder.observers.append(self.measure.observe)
        self._digests = await DigestCache(
            self._repo.index, lambda: int(getattr(bus, "reconnects", 0))
        ).start()
        self._dispatcher = Dispatcher(
            store,
            recorder,
            self._publish,
            lambda: self.connected,
            lambda: self.max_payload,
            lambda: self.leads,
        )
        registry = self._registry
        self.metrics.track_nodes(lambda: len(registry.up()), lambda: len(registry.down()))
        self._loops = [
            asyncio.create_task(consume(bus, recorder), name="fades-results"),
            asyncio.create_task(self._dispatcher.run(), name="fades-dispatcher"),
            asyncio.create_task(self._failover_when_leading(), name="fades-failover"),
            asyncio.create_task(
                self.measure.run(bus, lambda: [e.info.name for e in registry.up()]),
                name="fades-measure",
            ),
        ]
        try:
            await _retrying("the pipeline service", self.pipelines.start)
            await self.devices.start()
        except BaseException:
            await self.stop()
            raise
        if isinstance(self._log, StreamLog):  # other controllers write plans too
            self._loops.append(asyncio.create_task(self._follow_plans(), name="fades-plans"))
        if self.leads:
            self._elected()
        log.info(
            "controller started (NATS %s, down after %g s, placer %s)",
            self.settings.url,
            self.down_after,
            self.placer.name,
        )
        return self

    async def stop(self) -> None:
        """Stop consuming and close. Unfinished cloud tasks re-run on the next start."""
        loops, self._loops = self._loops, []
        cloud = list(self._cloud_tasks.values())
        await cancel_all([*loops, *cloud])
        await self.pipelines.stop()
        await self.devices.stop()
        if self._leader is not None:
            await self._leader.stop()
            self._leader = None
        if self._registry is not None:
            await self._registry.stop()
        if self._digests is not None:
            await self._digests.stop()
        if self._log is not None:
            await self._log.stop()
            self._log = None
        if self._cloud is not None:
            self._cloud.close()
        bus, self._bus = self._bus, None
        if bus is not None:
            await bus.close()
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> Controller:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- parts (available once started) ------------------------------------------------------
    @property
    def store(self) -> ControllerStore:
        if self._store is None:
            raise ControllerError("the controller is not running (call start() first)")
        return self._store

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise ControllerError("the controller is not running (call start() first)")
        return self._registry

    @property
    def repository(self) -> ArtifactRepository:
        if self._repo is None:
            raise ControllerError("the controller is not running (call start() first)")
        return self._repo

    @property
    def recorder(self) -> Recorder:
        if self._recorder is None:
            raise ControllerError("the controller is not running (call start() first)")
        return self._recorder

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise ControllerError("the controller is not running (call start() first)")
        return self._dispatcher

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise ControllerError("the controller is not running (call start() first)")
        return self._publisher

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise ControllerError("the controller is not running (call start() first)")
        return self._bus

    @property
    def connected(self) -> bool:
        return self._bus is not None and bool(getattr(self._bus, "connected", True))

    def authenticate(self, token: str | None) -> str:
        """The tenant of a bearer token (raises Unauthorized)."""
        return self.tokens.tenant(token)

    @property
    def leads(self) -> bool:
        """Whether this controller runs the duties that must run once (see
        :mod:`fades.controller.leader`)."""
        return self._leader is not None and self._leader.is_leader

    @property
    def writes(self) -> Log:
        """The controller log: every write to ``controller.db`` goes through it."""
        if self._log is None:
            raise ControllerError("the controller is not running (call start() first)")
        return self._log

    def _elected(self) -> None:
        """This controller leads now: re-run the cloud tasks nobody finished, sweep."""
        if self._dispatcher is not None:
            self._dispatcher.kick()
        if self._recorder is None:
            return  # still starting: start() calls this again

        async def rerun() -> None:
            for p in await asyncio.to_thread(self.store.pending, "cloud"):
                log.info("re-running cloud task %s interrupted by a restart", p.id)
                self._spawn_cloud(p)

        self._loops.append(asyncio.create_task(rerun(), name="fades-cloud-rerun"))

    def pipeline_store(self, local: PipelineStore) -> PipelineStore:
        """The pipeline service's store: writes through the controller log when there is
        one on the fabric (see :mod:`fades.controller.pipelog`)."""
        if isinstance(self._log, StreamLog):
            return LoggedPipelineStore(local, self._log, asyncio.get_running_loop())
        return local

    async def _follow_plans(self) -> None:
        """Keep the pipeline service's plans current with what other controllers write."""
        await follow_plans(self.pipelines)

    async def _failover_when_leading(self) -> None:
        """The failover watcher, on the leading controller only."""
        await while_leading(lambda: self.leads, lambda: run_failover(self))

    async def _publish(self, subject: str, data: bytes, msg_id: str) -> None:
        await self.bus.publish(subject, data, msg_id=msg_id)

    # --- tasks -------------------------------------------------------------------------------
    async def submit(
        self,
        task: Task | Mapping[str, Any],
        *,
        tenant: str | None = None,
        node: str | None = None,
        where: Where = "edge",
    ) -> SubmitReceipt:
        """Validate, pin, place, record and dispatch a task.

        Args:
            task: the task (mapping or :class:`Task`).
            tenant: the caller's tenant; the task must be for it (None: no check).
            node: run it on this node, or at the cloud with data from it (None: placed).
            where: ``edge`` (on the node) or ``cloud`` (here, on data pulled from the node).

        Raises:
            TaskValidationError (400), Forbidden (403), UnknownNode / ArtifactError (404),
            DuplicateTask (409), PayloadTooLarge (413), NoPlacement (422),
            NodeUnavailable (503).
        """
        try:
            receipt = await self._submit(task, tenant=tenant, node=node, where=where)
        except FadesError as exc:
            self.metrics.child(self.metrics.refused, exc.kind).inc()
            raise
        self.metrics.child(self.metrics.submitted, where).inc()
        return receipt

    async def _submit(
        self, task: Task | Mapping[str, Any], *, tenant: str | None, node: str | None, where: str
    ) -> SubmitReceipt:
        if where not in ("edge", "cloud"):
            raise TaskValidationError(
                f"where must be 'edge' or 'cloud', not {where!r}", problems=[("where", "unknown")]
            )
        loc: Site = "cloud" if where == "cloud" else "edge"
        t = task if isinstance(task, Task) else parse_task(dict(task))
        if tenant is not None and t.tenant != tenant:
            raise Forbidden(
                f"the task is for tenant {t.tenant!r} but the token belongs to tenant {tenant!r}",
                task_id=t.id,
            )
        reserved = sorted(k for k in t.inputs if k.startswith("_"))
        if reserved:  # ``_pipeline`` marks a pipeline stage's task on a node
            raise TaskValidationError(
                f"input name {reserved[0]!r} is reserved: names starting with '_' belong to "
                "fades (pipelines pass their run context that way); rename the input",
                problems=[(f"inputs.{reserved[0]}", "reserved name")],
                task_id=t.id,
            )
        if loc == "cloud" and t.function.mode != "ephemeral":
            raise TaskValidationError(
                "the cloud path runs ephemeral functions only; run persistent ones at the edge",
                problems=[("function.mode", "persistent functions run at the edge only")],
                task_id=t.id,
            )
        seen = self._exists or ExistsLookup(self.store.existing)
        if await seen(t.tenant, t.id):
            raise DuplicateTask(
                f"task id {t.id!r} was already submitted; task ids must be unique", task_id=t.id
            )
        ref = t.function.artifact
        digest = (self._digests and self._digests.pin(ref)) or await self.publisher.pin(ref)
        placed = self._place(t, node, loc)
        if loc == "edge" and placed.where != "edge":  # the placer chose the cloud or the device
            loc = placed.where
        reason = placed.reason
        if loc == "cloud" and t.data:
            reason = f"cloud run on data from: {placed.reason}"
        pending = PendingTask(
            t.tenant, t.id, t.id, placed.node, loc, t.model_dump(mode="json"), time.time(), digest
        )
        data = self._check_size(pending) if loc == "edge" else None
        wire_id = await self.writes.write(
            "add_task",
            add_task_args(
                task_id=t.id,
                tenant=t.tenant,
                node=placed.node,
                where=loc,
                task=pending.task,
                placement=reason,
                submitted_at=pending.submitted_at,
                digest=digest,
                decision=placed.decision,
            )
            # a lone controller's write is not sent anywhere: the task's JSON from pydantic's
            # own encoder (faster than json.dumps of the dict)
            | ({"task_text": t.model_dump_json()} if isinstance(self.writes, DirectLog) else {}),
        )
        pending = dataclasses.replace(pending, wire_id=wire_id)
        if loc == "device":  # "run it locally": nothing runs here or on a node
            return SubmitReceipt(
                task_id=t.id, node=placed.node, where=loc, status="local", placement=reason
            )
        site = "cloud" if loc == "cloud" else placed.node
        self.measure.placed(site, t.tenant, t.id, (placed.decision or {}).get("input_bytes", 0))
        if loc == "edge":
            await self.dispatcher.dispatch(pending, data if wire_id == t.id else None)
        else:
            self._spawn_cloud(pending)
        queued = (placed.decision or {}).get("queued")
        return SubmitReceipt(
            task_id=t.id, node=placed.node, where=loc, placement=reason, queued=queued
        )

    def _check_size(self, p: PendingTask) -> bytes:
        """Refuse a task whose message the fabric would never carry (413); returns the
        task's envelope as published under its own id (the usual wire id)."""
        limit = self.max_payload - HEADER_ROOM
        data = envelope(dataclasses.replace(p, wire_id=p.id))
        # a wire id with a suffix (another tenant used the id) is at most 64 characters of
        # [A-Za-z0-9._-] (nothing to escape): the longest the envelope can be
        size = len(data) + max(0, WIRE_ID_MAX - len(p.id))
        if size > limit:
            raise PayloadTooLarge(
                f"the task's message would be {size} bytes; the fabric carries at most "
                f"{limit} bytes per task: send less in function.params",
                task_id=p.id,
            )
        return data

    def _place(self, task: Task, node: str | None, loc: str = "edge") -> Placement:
        try:
            return self._place_up(task, node, loc)
        except (NodeUnavailable, NoPlacement) as exc:
            if loc != "edge":
                raise
            # the node (or the only holder of the data) is offline: queue or refuse
            return place_offline(self.registry, task, node, exc)

    def _place_up(self, task: Task, node: str | None, loc: str = "edge") -> Placement:
        if loc == "cloud" and node is None and not task.data:
            return Placement(
                "cloud", "reads no node's data: runs in the cloud on its inputs", "cloud"
            )
        if node is None:
            draining = moving(self).draining  # nodes being drained take no new work
            up = [e.info for e in self.registry.up()]
            try:
                return self.placer.place(
                    task,
                    [n for n in up if n.name not in draining],
                    [e.info for e in self.registry.down()],
                )
            except NoPlacement as exc:  # say so when only a draining node would do
                raise draining_refusal(task, exc, [n for n in up if n.name in draining]) from None
        entry = self.registry.get(node)
        if entry is None:
            known = ", ".join(sorted(self.registry.nodes)) or "none"
            raise UnknownNode(f"no node named {node!r} is registered (known: {known})", node=node)
        reason = entry.down_reason(self.registry.down_after)
        if reason is not None:
            raise NodeUnavailable(f"node {node!r} is down: {reason}", node=node)
        return Placement(node, "node named by the client")

    async def get(self, task_id: str, *, tenant: str) -> TaskRecord:
        """One of ``tenant``'s tasks (TaskNotFound for any other). In a worker thread: its
        outcome (up to the fabric's message size) is parsed and validated there, not on the
        event loop."""
        return await read(None, self.store.get, task_id, tenant)

    async def wait(self, task_id: str, timeout: float, *, tenant: str) -> TaskRecord:
        """The task once it is done or failed, or as it stands after ``timeout`` seconds."""
        with self.recorder.waiting(tenant, task_id) as event:
            rec = await self.get(task_id, tenant=tenant)
            if rec.done or timeout <= 0:
                return rec
            with contextlib.suppress(TimeoutError):
                await wait_for(event.wait(), timeout)
            if event.stored is not None:  # as stored: no need to read it back
                return event.record(rec)
        return await self.get(task_id, tenant=tenant)

    async def cancel(self, task_id: str, *, tenant: str) -> CancelReceipt:
        """Cancel one of ``tenant``'s tasks (see :mod:`fades.controller.cancel`)."""
        from fades.controller.cancel import cancel

        return await cancel(self, task_id, tenant=tenant)

    def cancel_cloud(self, tenant: str, task_id: str) -> None:
        running = self._cloud_tasks.pop((tenant, task_id), None)
        if running is not None:
            running.cancel()

    async def list(self, *, tenant: str | None = None, limit: int = 100) -> list[TaskRecord]:
        """Tasks, newest first (only ``tenant``'s if given)."""
        return await asyncio.to_thread(self.store.list, tenant, max(1, min(limit, 10_000)))

    # --- nodes and functions -----------------------------------------------------------------
    def nodes(self) -> NodeViews:
        """Every registered node, up or down, by name (and whether it is being drained)."""
        views = self.registry.views()
        draining = moving(self).draining
        for v in views:
            v.draining = v.name in draining
        return views

    async def functions_list(self) -> FunctionInfos:
        """Artifacts in the repository, newest first (FabricError: unreachable, HTTP 503)."""
        return await self.publisher.list()

    async def upload(
        self, data: bytes, *, tenant: str | None = None, allow_rollback: bool = False
    ) -> FunctionInfo:
        """Verify an artifact and put it in the repository (see :class:`Publisher`)."""
        info = await self.publisher.upload(data, tenant=tenant, allow_rollback=allow_rollback)
        if self._digests is not None:
            await self._digests.refresh(info.name, info.digest)
        return info

    # --- cloud -------------------------------------------------------------------------------
    def _spawn_cloud(self, p: PendingTask) -> None:
        key = (p.tenant, p.id)
        if key in self._cloud_tasks:
            return

        async def run() -> None:
            assert self._cloud is not None
            try:
                await self.writes.write(
                    "mark_dispatched", {"tenant": p.tenant, "task_id": p.id, "at": time.time()}
                )
                task = parse_task(p.task)
                digest = p.digest or await self.publisher.pin(task.function.artifact)
                out, uplink = await self._cloud.run(task, p.node, p.submitted_at, digest)
                await self.recorder.record(out, "cloud", uplink)
            finally:
                self._cloud_tasks.pop(key, None)

        self._cloud_tasks[key] = asyncio.create_task(run(), name=f"fades-cloud-{p.id}")


def _placer(value: Placer | str) -> Placer:
    return placer(value) if isinstance(value, str) else value


#: how long a starting controller keeps retrying JetStream set-up that fails
START_RETRY_S = 60.0

_T = TypeVar("_T")


async def _retrying(what: str, step: Callable[[], Awaitable[_T]]) -> _T:
    """``step()``, tried again on :class:`FabricError` for up to :data:`START_RETRY_S`."""
    return await retrying(f"controller: {what}", step, log, START_RETRY_S)
