"""The controller: node registry, function repository, placement, dispatch and results.

One :class:`Controller` runs in an asyncio loop (the HTTP API shares it). A submitted task is
validated, placed (named node, or by data locality), recorded in ``controller.db`` and only
then published to ``fades.task.<node>`` with its id as ``Nats-Msg-Id``. Results arrive on a
durable pull consumer (``controller`` on ``fades.result.>``); the first one per task id is
stored, later copies are ignored, and every message is acked after it is stored.

After a restart the controller re-publishes tasks it had accepted but not dispatched,
re-runs unfinished cloud tasks, and consumes the results published while it was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext

from fades.controller.auth import Tokens
from fades.controller.cloud import CloudRunner
from fades.controller.metrics import Metrics
from fades.controller.models import FunctionInfo, NodeView, SubmitReceipt, TaskInfo, Where
from fades.controller.placement import Placement, place
from fades.controller.registry import DOWN_AFTER_S, Registry
from fades.controller.store import ControllerStore, Outcome
from fades.errors import (
    ArtifactError,
    ControllerError,
    DuplicateTask,
    FabricError,
    FadesError,
    Forbidden,
    NodeUnavailable,
    SignatureError,
    TaskValidationError,
    UnknownNode,
)
from fades.fabric.connect import FabricSettings, connect
from fades.fabric.protocol import ResultMessage, TaskEnvelope
from fades.fabric.repository import ArtifactRepository
from fades.fabric.streams import ensure_streams, nodes_bucket
from fades.fabric.subjects import RESULTS_STREAM, task_subject
from fades.functions.artifact import parse
from fades.functions.keys import TrustStore
from fades.functions.store import FunctionStore
from fades.task import Task, parse_task

log = logging.getLogger("fades.controller")

#: the controller's durable consumer on the results stream
RESULTS_CONSUMER = "controller"
#: seconds between re-publish attempts of tasks accepted but not yet in JetStream
REDISPATCH_S = 1.0
#: seconds to wait for the function repository before falling back on the local store
REPOSITORY_TIMEOUT_S = 2.0

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
    ) -> None:
        self.home = Path(home).expanduser()
        self.home.mkdir(parents=True, exist_ok=True)
        self.settings = nats if isinstance(nats, FabricSettings) else FabricSettings.from_env(nats)
        self.tokens = tokens if isinstance(tokens, Tokens) else Tokens(tokens)
        self.down_after = down_after
        self.cloud_capacity = cloud_capacity or os.cpu_count() or 1
        self.name = name
        self.metrics = Metrics()
        self.functions = FunctionStore(self.home / "artifacts", self._trust())
        self._store: ControllerStore | None = None
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._repo: ArtifactRepository | None = None
        self._registry: Registry | None = None
        self._cloud: CloudRunner | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._cloud_tasks: dict[str, asyncio.Task[None]] = {}
        self._inflight: set[str] = set()
        self._waiters: dict[str, asyncio.Event] = {}
        self._redispatch = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> Controller:
        """Connect, open the streams, bucket and repository, and start consuming results.

        Raises:
            FabricError: NATS cannot be reached.
        """
        if self._nc is not None:
            return self
        self._store = ControllerStore(self.home / "controller.db")
        try:
            nc = await connect(self.settings, name=self.name)
        except BaseException:
            self._store.close()
            self._store = None
            raise
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            kv = await nodes_bucket(js)
            self._repo = await ArtifactRepository.open(js)
            self._registry = Registry(kv, self.down_after, lambda: int(nc.stats["reconnects"]))
            await self._registry.start()
            sub = await js.pull_subscribe(
                "fades.result.>",
                durable=RESULTS_CONSUMER,
                stream=RESULTS_STREAM,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0, max_deliver=-1),
            )
        except BaseException:
            if self._registry is not None:
                await self._registry.stop()
                self._registry = None
            await nc.close()
            self._store.close()
            self._store = None
            raise
        self._nc, self._js = nc, js
        self._cloud = CloudRunner(nc, self._repo, self.functions, self.cloud_capacity)
        registry = self._registry
        self.metrics.track_nodes(lambda: len(registry.up()), lambda: len(registry.down()))
        self._loops = [
            asyncio.create_task(self._consume_results(sub), name="fades-results"),
            asyncio.create_task(self._dispatcher(), name="fades-dispatcher"),
        ]
        for p in self.store.pending("cloud"):
            log.info("re-running cloud task %s interrupted by a restart", p.id)
            self._spawn_cloud(parse_task(p.task), p.node, p.submitted_at)
        log.info(
            "controller started (NATS %s, down after %g s)", self.settings.url, self.down_after
        )
        return self

    async def stop(self) -> None:
        """Stop consuming and close. Unfinished cloud tasks re-run on the next start."""
        loops, self._loops = self._loops, []
        cloud = list(self._cloud_tasks.values())
        for t in [*loops, *cloud]:
            t.cancel()
        for t in [*loops, *cloud]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._registry is not None:
            await self._registry.stop()
        if self._cloud is not None:
            self._cloud.close()
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
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
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def authenticate(self, token: str | None) -> str:
        """The tenant of a bearer token (raises Unauthorized)."""
        return self.tokens.tenant(token)

    # --- tasks -------------------------------------------------------------------------------
    async def submit(
        self,
        task: Task | Mapping[str, Any],
        *,
        tenant: str | None = None,
        node: str | None = None,
        where: Where = "edge",
    ) -> SubmitReceipt:
        """Validate, place, record and dispatch a task.

        Args:
            task: the task (mapping or :class:`Task`).
            tenant: the caller's tenant; the task must be for it (None: no check).
            node: run it on this node, or at the cloud with data from it (None: place by
                data locality).
            where: ``edge`` (on the node) or ``cloud`` (here, on data pulled from the node).

        Raises:
            TaskValidationError (400), Forbidden (403), UnknownNode / ArtifactError (404),
            DuplicateTask (409), NoPlacement (422), NodeUnavailable (503).
        """
        try:
            receipt = await self._submit(task, tenant=tenant, node=node, where=where)
        except FadesError as exc:
            self.metrics.refused.labels(exc.kind).inc()
            raise
        self.metrics.submitted.labels(where).inc()
        return receipt

    async def _submit(
        self, task: Task | Mapping[str, Any], *, tenant: str | None, node: str | None, where: str
    ) -> SubmitReceipt:
        if where not in ("edge", "cloud"):
            raise TaskValidationError(
                f"where must be 'edge' or 'cloud', not {where!r}", problems=[("where", "unknown")]
            )
        t = task if isinstance(task, Task) else parse_task(dict(task))
        if tenant is not None and t.tenant != tenant:
            raise Forbidden(
                f"the task is for tenant {t.tenant!r} but the token belongs to tenant {tenant!r}",
                task_id=t.id,
            )
        if where == "cloud" and t.function.mode != "ephemeral":
            raise TaskValidationError(
                "the cloud path runs ephemeral functions only; run persistent ones at the edge",
                problems=[("function.mode", "persistent functions run at the edge only")],
                task_id=t.id,
            )
        if self.store.exists(t.id):
            raise DuplicateTask(
                f"task id {t.id!r} was already submitted; task ids must be unique", task_id=t.id
            )
        await self._known_function(t.function.artifact)
        placed = self._place(t, node)
        reason = placed.reason if where == "edge" else f"cloud run on data from: {placed.reason}"
        submitted_at = time.time()
        body = t.model_dump(mode="json")
        self.store.add_task(
            t.id,
            tenant=t.tenant,
            node=placed.node,
            where="cloud" if where == "cloud" else "edge",
            task=body,
            placement=reason,
            submitted_at=submitted_at,
        )
        if where == "edge":
            await self._dispatch(t.id, placed.node, body, submitted_at)
        else:
            self._spawn_cloud(t, placed.node, submitted_at)
        return SubmitReceipt(
            task_id=t.id,
            node=placed.node,
            where="cloud" if where == "cloud" else "edge",
            placement=reason,
        )

    async def _known_function(self, ref: str) -> None:
        """Refuse a function the repository does not hold (404).

        While the repository is unreachable (NATS down), a function this controller holds
        verified is accepted: the task waits in controller.db and is dispatched later.
        """
        try:
            if not self.connected:
                raise FabricError("not connected to NATS")
            digest = await asyncio.wait_for(self.repository.resolve(ref), REPOSITORY_TIMEOUT_S)
            await asyncio.wait_for(self.repository.record(digest), REPOSITORY_TIMEOUT_S)
            return
        except ArtifactError:
            raise ArtifactError(
                f"unknown function {ref!r}: the repository holds no such artifact; "
                "upload it first (POST /v1/functions or 'fades fn upload')"
            ) from None
        except Exception as exc:  # NATS unreachable or slow
            problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
        try:
            self.functions.get(ref)
        except ArtifactError:
            raise FabricError(
                f"cannot check function {ref!r}: the function repository is unreachable "
                f"({problem}); try again when NATS is back"
            ) from None

    def _place(self, task: Task, node: str | None) -> Placement:
        if node is None:
            return place(
                task,
                [e.info for e in self.registry.up()],
                [e.info for e in self.registry.down()],
            )
        entry = self.registry.get(node)
        if entry is None:
            known = ", ".join(sorted(self.registry.nodes)) or "none"
            raise UnknownNode(f"no node named {node!r} is registered (known: {known})", node=node)
        reason = entry.down_reason(self.registry.down_after)
        if reason is not None:
            raise NodeUnavailable(f"node {node!r} is down: {reason}", node=node)
        return Placement(node, "node named by the client")

    def get(self, task_id: str, *, tenant: str | None = None) -> TaskInfo:
        """A task's status, result and timing (TaskNotFound for another tenant's task)."""
        return self.store.get(task_id, tenant)

    async def wait(self, task_id: str, timeout: float, *, tenant: str | None = None) -> TaskInfo:
        """The task once it is done or failed, or as it stands after ``timeout`` seconds."""
        info = self.get(task_id, tenant=tenant)
        if info.done or timeout <= 0:
            return info
        event = self._waiters.setdefault(task_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self.get(task_id, tenant=tenant)

    def list(self, *, tenant: str | None = None, limit: int = 100) -> list[TaskInfo]:
        """Tasks, newest first (only ``tenant``'s if given)."""
        return self.store.list(tenant, max(1, min(limit, 10_000)))

    # --- nodes and functions -----------------------------------------------------------------
    def nodes(self) -> NodeViews:
        """Every registered node, up or down, by name."""
        now = time.time()
        out = []
        for name, entry in sorted(self.registry.nodes.items()):
            info = entry.info
            reason = entry.down_reason(self.registry.down_after, now)
            load = info.load.model_dump()
            load["score"] = info.load.score
            out.append(
                NodeView(
                    name=name,
                    up=reason is None,
                    down_reason=reason,
                    heartbeat_age_s=round(entry.age(now), 3),
                    load=load,
                    data=[d.model_dump() for d in info.data],
                    labels=info.labels,
                    runtimes=info.runtimes,
                    arch=info.arch,
                    cores=info.cores,
                    memory_mib=info.memory_mib,
                    version=info.version,
                    seq=info.seq,
                    stats=info.stats,
                )
            )
        return out

    async def functions_list(self) -> FunctionInfos:
        """Artifacts in the repository, newest first.

        Raises:
            FabricError: the repository could not be read (NATS unreachable); HTTP 503.
        """
        try:
            records = await asyncio.wait_for(self.repository.list(), REPOSITORY_TIMEOUT_S)
        except FadesError:
            raise
        except Exception as exc:  # nats-py raises timeouts and connection errors of its own
            raise FabricError(
                f"the function repository is unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        return [FunctionInfo(**r.to_dict()) for r in records]

    def _trust(self) -> TrustStore:
        return TrustStore.from_dir(self.home / "trusted")

    async def upload(self, data: bytes) -> FunctionInfo:
        """Verify an artifact against ``<home>/trusted`` and put it in the repository.

        Raises:
            ArtifactFormatError: not a fades artifact.
            SignatureError: unsigned, tampered, or signed by a key the controller does not trust.
        """
        art = parse(data)
        trust = self._trust()  # re-read: keys may be added while the controller runs
        self.functions.trust = trust
        try:
            art.verify(trust)
        except SignatureError as exc:
            raise SignatureError(
                f"upload refused: {exc}; the controller trusts the keys in {self.home / 'trusted'}"
            ) from None
        rec = await self.repository.put(art)
        await asyncio.to_thread(self.functions.add, art)  # ready for the cloud path
        log.info("uploaded %s function %s %s", art.kind, art.name, art.digest)
        return FunctionInfo(**rec.to_dict())

    # --- dispatch ----------------------------------------------------------------------------
    async def _dispatch(
        self, task_id: str, node: str, body: dict[str, Any], submitted_at: float
    ) -> bool:
        """Publish one recorded task to its node's subject; False if it must be retried.

        JetStream drops a second publish with the same ``Nats-Msg-Id`` (within its duplicate
        window) and the node ignores a task id it already holds, so re-publishing is safe.
        """
        if self._js is None or not self.connected:
            self._redispatch.set()
            return False  # stays 'accepted'; the dispatcher retries once NATS is back
        self._inflight.add(task_id)
        try:
            env = TaskEnvelope(task=body, submitted_at=submitted_at)
            await self._js.publish(
                task_subject(node), env.encode(), headers={"Nats-Msg-Id": task_id}, timeout=2.0
            )
            self.store.mark_dispatched(task_id)
            return True
        except Exception as exc:  # NATS down or slow: the task stays 'accepted' and is retried
            log.warning("task %s not dispatched yet (%s: %s); retrying", task_id, type(exc), exc)
            self._redispatch.set()
            return False
        finally:
            self._inflight.discard(task_id)

    async def _dispatcher(self) -> None:
        """Re-publish tasks accepted but not yet handed to JetStream (restart, NATS outage)."""
        while True:
            try:
                for p in self.store.pending("edge"):
                    if p.id in self._inflight:
                        continue  # its submit is publishing it right now
                    if not await self._dispatch(p.id, p.node, p.task, p.submitted_at):
                        break  # NATS is unreachable: wait before trying the rest
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher pass failed")
            self._redispatch.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._redispatch.wait(), REDISPATCH_S)

    # --- results -----------------------------------------------------------------------------
    def _record(self, outcome: Outcome, where: Where) -> bool:
        new = self.store.add_result(outcome)
        if not new:
            self.metrics.duplicates.inc()
            log.debug("duplicate result for task %s ignored", outcome.task_id)
            return False
        self.metrics.results.labels(where, outcome.status).inc()
        latency = (outcome.timing or {}).get("latency")
        with contextlib.suppress(Exception):
            info = self.store.get(outcome.task_id)
            latency = info.latency_s
        if latency is not None:
            self.metrics.latency.labels(where).observe(latency)
        event = self._waiters.pop(outcome.task_id, None)
        if event is not None:
            event.set()
        return True

    async def _consume_results(self, sub: Any) -> None:
        while True:
            try:
                # fetch(1): a batch fetch waits for the whole batch once a first message is in
                msgs = await sub.fetch(batch=1, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                continue
            except Exception as exc:  # disconnected: the durable consumer keeps our place
                log.debug("results fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                try:
                    res = ResultMessage.decode(msg.data)
                except FabricError as exc:
                    log.warning("dropping a malformed result on %s: %s", msg.subject, exc)
                    with contextlib.suppress(Exception):
                        await msg.term()
                    continue
                self._record(
                    Outcome(
                        task_id=res.task_id,
                        tenant=res.tenant,
                        node=res.node,
                        status=res.status,
                        result=res.result,
                        error_kind=res.error_kind,
                        error=res.error,
                        timing=res.timing,
                        bytes_read=res.bytes_read,
                        bytes_returned=res.bytes_returned,
                        accepted_at=res.accepted_at,
                        finished_at=res.finished_at,
                        bytes_uplink=len(msg.data),
                    ),
                    "edge",
                )
                with contextlib.suppress(Exception):  # unacked: redelivered, then ignored
                    await msg.ack()

    # --- cloud -------------------------------------------------------------------------------
    def _spawn_cloud(self, task: Task, node: str, submitted_at: float) -> None:
        if task.id in self._cloud_tasks:
            return

        async def run() -> None:
            assert self._cloud is not None
            try:
                self.store.mark_dispatched(task.id)
                outcome = await self._cloud.run(task, node, submitted_at)
                self._record(outcome, "cloud")
            finally:
                self._cloud_tasks.pop(task.id, None)

        self._cloud_tasks[task.id] = asyncio.create_task(run(), name=f"fades-cloud-{task.id}")
