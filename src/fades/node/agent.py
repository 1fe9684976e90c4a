"""The node agent: one edge node on the NATS fabric.

It wraps a :class:`fades.node.Node` (its folder, orchestrator, broker and function store) and

* registers the node in the ``fades_nodes`` bucket and re-puts its entry every heartbeat
  (load, data held, ingest stats; ``stopping: true`` on a clean stop);
* pulls tasks from its durable consumer ``node-<name>`` on ``fades.task.<name>``: fetches a
  missing artifact (and the Python runtime) from the repository, verifies it against the
  node's own trust store, submits the task durably and only then acks. A task the node
  refuses is answered with a failed result; a redelivered task it already holds is just acked;
* publishes every finished or failed task to ``fades.result.<name>`` (message id
  ``<task id>.result``) through an outbox in ``tasks.db``: a result counts as delivered once
  JetStream acknowledges it, and undelivered ones are re-published on start, after a
  reconnect and on every heartbeat (at least once; readers de-duplicate by task id);
* serves remote retrieval on ``fades.node.<name>.query`` and liveness on ``...ping``;
* runs the MQTT sensor ingest (:mod:`fades.sensors.ingest`) when that module is present.

Blocking work (SQLite, signature checks, data retrieval, submit) runs in threads, so the
event loop keeps heartbeating. Every loop survives a NATS restart: errors are logged, the
loop backs off briefly and tries again, and the pull subscription is re-created if needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from fades import __version__
from fades.errors import (
    ArtifactError,
    ArtifactFormatError,
    BrokerError,
    FabricError,
    FadesError,
    SignatureError,
    TaskError,
)
from fades.fabric.connect import FabricSettings, connect
from fades.fabric.protocol import (
    DataHeld,
    NodeInfo,
    NodeLoad,
    QueryMeta,
    QueryRequest,
    ResultMessage,
    TaskEnvelope,
)
from fades.fabric.repository import ArtifactRepository
from fades.fabric.streams import ensure_streams, nodes_bucket
from fades.fabric.subjects import (
    TASKS_STREAM,
    check_token,
    ping_subject,
    query_subject,
    result_subject,
    task_subject,
)
from fades.fabric.transfer import reply_error, reply_json, send_chunks
from fades.functions.artifact import PYTHON_ABI
from fades.node import Node
from fades.node.taskstore import TaskRecord
from fades.sandbox.wire import encode

if TYPE_CHECKING:
    from fades.sensors.ingest import Ingestor

log = logging.getLogger("fades.node.agent")

#: seconds JetStream waits for an ack before redelivering a task
ACK_WAIT_S = 30.0
#: tasks pulled per fetch, and how long one fetch waits. nats-py's fetch(n) keeps waiting for
#: the whole batch until the timeout once a first message arrived, so a batch above 1 adds up
#: to FETCH_TIMEOUT_S of latency to a lone task; fetch(1) returns as soon as one is there.
FETCH_BATCH = 1
FETCH_TIMEOUT_S = 1.0
#: the data summary is refreshed at least every this many heartbeats
DATA_EVERY = 5
#: bound on one JetStream publish or KV put
PUBLISH_TIMEOUT_S = 5.0
#: pause after a failed fabric operation (the server may be restarting)
BACKOFF_S = (0.2, 0.5)

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# errors that leave a task for later (the message is not acked and comes back)
_TRANSIENT: tuple[type[BaseException], ...] = (nats.errors.Error, TimeoutError, OSError)


def memory_mib() -> int:
    """Total memory of this machine in MiB (0 if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return 0


def _refusal(exc: BaseException) -> bool:
    """True if ``exc`` means the task itself cannot run here (answer it with a failed result)."""
    return isinstance(exc, (TaskError, ArtifactError, BrokerError))


class NodeAgent:
    """One node on the fabric.

    Args:
        name: node name (a subject token: letters, digits, ``_``, ``-``).
        home: the node folder (``None``: ``FADES_HOME``).
        settings: where NATS is and how to authenticate.
        heartbeat_s: seconds between registry puts.
        labels: free-form labels reported in the registry.
        capacity: tasks run at the same time (default: ``node.yaml`` or 2).
        ingest: run the MQTT sensor ingest if :mod:`fades.sensors.ingest` is available.
        connect_timeout: how long to wait for NATS at start.
    """

    def __init__(
        self,
        name: str,
        home: str | Path | None,
        settings: FabricSettings,
        *,
        heartbeat_s: float = 2.0,
        labels: dict[str, str] | None = None,
        capacity: int | None = None,
        ingest: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        self.name = check_token(name)
        if heartbeat_s <= 0:
            raise FabricError(f"heartbeat must be positive, got {heartbeat_s}")
        if capacity is not None and capacity < 1:
            raise FabricError(f"capacity must be at least 1, got {capacity}")
        self.home = home
        self.settings = settings
        self.heartbeat_s = heartbeat_s
        self.labels = dict(labels or {})
        self.capacity = capacity
        self.ingest_enabled = ingest
        self.connect_timeout = connect_timeout
        self.node: Node | None = None
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.repo: ArtifactRepository | None = None
        self.ingestor: Ingestor | None = None
        #: counters for logs and tests: received, accepted, refused, duplicates, published
        self.counters: dict[str, int] = dict.fromkeys(
            ("received", "accepted", "refused", "duplicates", "published"), 0
        )
        self.seq = 0
        self.started_at = 0.0
        self.ready = False
        self._kv: KeyValue | None = None
        self._psub: JetStreamContext.PullSubscription | None = None
        self._subs: list[Subscription] = []
        self._intake: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: asyncio.Queue[str] | None = None
        self._outbox_lock: asyncio.Lock | None = None
        self._data: list[DataHeld] = []
        self._data_beat = -DATA_EVERY
        self._ingest_written: Any = None
        self._describe_s = 0.0
        self._reconnects = 0
        self._stopping = False
        self._stopped = False

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def _node(self) -> Node:
        if self.node is None:
            raise FabricError(f"node agent {self.name} is not started")
        return self.node

    @property
    def _nc(self) -> NATS:
        if self.nc is None:
            raise FabricError(f"node agent {self.name} is not connected")
        return self.nc

    @property
    def _js(self) -> JetStreamContext:
        if self.js is None:
            raise FabricError(f"node agent {self.name} is not connected")
        return self.js

    async def start(self) -> None:
        """Connect, open the node, register, and start consuming tasks.

        Raises:
            FabricError: NATS is unreachable or refused us; FadesError: the node folder is bad.
        """
        self._loop = asyncio.get_running_loop()
        self._finished = asyncio.Queue()
        self._outbox_lock = asyncio.Lock()
        self.started_at = time.time()
        try:
            self.nc = await connect(
                self.settings, name=f"fades-node-{self.name}", timeout=self.connect_timeout
            )
            self.js = self.nc.jetstream()
            self.node = await asyncio.to_thread(self._open_node)
            self._reconnects = self._nc.stats["reconnects"]
            await asyncio.wait_for(ensure_streams(self._js), PUBLISH_TIMEOUT_S)
            self.repo = await asyncio.wait_for(ArtifactRepository.open(self._js), PUBLISH_TIMEOUT_S)
            self._subs.append(await self._nc.subscribe(ping_subject(self.name), cb=self._on_ping))
            self._subs.append(await self._nc.subscribe(query_subject(self.name), cb=self._on_query))
            await self._start_ingest()
            await self._refresh_data()
            await self._beat()  # registration
            await self._subscribe_tasks()
            await self._flush_outbox()  # results left undelivered by an earlier run
        except (nats.errors.Error, TimeoutError) as exc:
            await self._teardown()
            raise FabricError(
                f"node {self.name}: NATS at {self.settings.url} did not answer a JetStream "
                f"request ({exc!r}); is JetStream enabled on that server?"
            ) from exc
        except BaseException:
            await self._teardown()
            raise
        self._publisher = asyncio.create_task(self._publish_loop())
        self._heartbeat = asyncio.create_task(self._heartbeat_loop())
        self._intake = asyncio.create_task(self._consume_loop())
        self.ready = True
        log.info("node %s ready on %s", self.name, self.settings.url)

    def _open_node(self) -> Node:
        node = Node(self.home, capacity=self.capacity, autostart=False)
        try:
            node.orchestrator.on_finish.append(self._on_finish)
            node.orchestrator.start()
        except BaseException:
            node.close()
            raise
        return node

    async def stop(self) -> None:
        """Stop intake, let running tasks finish, deliver their results, put ``stopping``."""
        if self._stopped:
            return
        self._stopping = True
        self.ready = False
        await _cancel(self._intake)
        await self._unsubscribe_tasks()
        await _cancel(self._heartbeat)
        await self._last_beat()  # stopping: true, so the controller sends nothing more
        if self.ingestor is not None:
            try:
                await asyncio.wait_for(self.ingestor.stop(), 10.0)
            except Exception as exc:
                log.warning("node %s: ingest did not stop cleanly: %s", self.name, exc)
            self.ingestor = None
        if self.node is not None:
            await asyncio.to_thread(self.node.orchestrator.drain)
        if self.nc is not None and self.nc.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush_outbox(), 10.0)
        await _cancel(self._publisher)
        await self._last_beat()  # final entry: stopping, load drained
        await self._teardown()
        log.info("node %s stopped", self.name)

    async def _last_beat(self) -> None:
        if self.nc is not None and self.nc.is_connected:
            try:
                await self._beat()
            except Exception as exc:
                log.warning("node %s: could not put its stopping entry: %r", self.name, exc)

    async def _teardown(self) -> None:
        self._stopping = True
        self._stopped = True
        await _cancel(self._intake, self._heartbeat, self._publisher, *self._inflight)
        self._intake = self._heartbeat = self._publisher = None
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
        if self.ingestor is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ingestor.stop(), 5.0)
            self.ingestor = None
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 5.0)
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

    # --- registry ----------------------------------------------------------------------------
    def info(self) -> NodeInfo:
        """The registry entry as of now (without bumping ``seq``)."""
        load = NodeLoad(capacity=self.capacity or 1)
        if self.node is not None:
            orc = self.node.orchestrator
            current = orc.load
            load = NodeLoad(
                running=current["running"], queued=current["queued"], capacity=orc.capacity
            )
        stats = dict(self.ingestor.stats) if self.ingestor is not None else {}
        return NodeInfo(
            name=self.name,
            version=__version__,
            arch=platform.machine(),
            cores=os.cpu_count() or 1,
            memory_mib=memory_mib(),
            runtimes=["python", "core"],
            labels=self.labels,
            data=list(self._data),
            load=load,
            started_at=self.started_at,
            heartbeat_at=time.time(),
            heartbeat_s=self.heartbeat_s,
            seq=self.seq,
            stopping=self._stopping,
            stats=stats,
        )

    def _describe(self) -> list[DataHeld]:
        return DataHeld.from_broker(self._node.broker.describe())

    async def _refresh_data(self) -> None:
        t0 = time.perf_counter()
        try:
            self._data = await asyncio.to_thread(self._describe)
        except FadesError as exc:
            log.warning("node %s: cannot describe its data: %s", self.name, exc)
        self._describe_s = time.perf_counter() - t0
        self._data_beat = self.seq

    async def _beat(self) -> None:
        """Put the registry entry (seq + 1), refreshing the data summary when due.

        The summary is refreshed every :data:`DATA_EVERY` beats, and on a beat after ingest
        wrote readings unless describing the data costs more than a quarter of a beat.
        """
        written = self.ingestor.stats.get("written") if self.ingestor is not None else None
        due = self.seq - self._data_beat >= DATA_EVERY
        cheap = self._describe_s <= self.heartbeat_s / 4
        if due or (written != self._ingest_written and cheap):
            self._ingest_written = written
            await self._refresh_data()
        self.seq += 1
        entry = self.info().encode()
        try:
            if self._kv is None:
                self._kv = await asyncio.wait_for(nodes_bucket(self._js), PUBLISH_TIMEOUT_S)
            await asyncio.wait_for(self._kv.put(self.name, entry), PUBLISH_TIMEOUT_S)
        except Exception:
            self._kv = None  # re-open the bucket next time (the server may have restarted)
            raise

    async def _heartbeat_loop(self) -> None:
        failures = 0
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_s)
            reconnects = self._nc.stats["reconnects"]
            if reconnects != self._reconnects:
                self._reconnects = reconnects
                log.info("node %s: reconnected to NATS; re-checking streams", self.name)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ensure_streams(self._js), PUBLISH_TIMEOUT_S)
                    # re-created if the server came back without its store
                    self.repo = await asyncio.wait_for(
                        ArtifactRepository.open(self._js), PUBLISH_TIMEOUT_S
                    )
            try:
                await self._beat()
                if failures:
                    log.info("node %s: heartbeat resumed after %d failures", self.name, failures)
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("node %s: heartbeat failed (%d): %s", self.name, failures, exc)
                continue
            await self._flush_outbox()

    # --- task intake -------------------------------------------------------------------------
    async def _subscribe_tasks(self) -> None:
        await asyncio.wait_for(ensure_streams(self._js), PUBLISH_TIMEOUT_S)
        durable = f"node-{self.name}"
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=-1,
            filter_subject=task_subject(self.name),
        )
        self._psub = await asyncio.wait_for(
            self._js.pull_subscribe(
                task_subject(self.name), durable=durable, stream=TASKS_STREAM, config=config
            ),
            PUBLISH_TIMEOUT_S,
        )

    async def _unsubscribe_tasks(self) -> None:
        psub, self._psub = self._psub, None
        if psub is not None:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()  # the durable consumer stays on the server

    async def _consume_loop(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                if self._psub is None:
                    await self._subscribe_tasks()
                    log.info("node %s: consuming tasks again", self.name)
                assert self._psub is not None
                msgs = await self._psub.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
            except TimeoutError:
                continue  # no task (or a reconnect swallowed the pull request)
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("node %s: pulling tasks failed (%d): %r", self.name, failures, exc)
                if failures >= 3:
                    await self._unsubscribe_tasks()  # re-create the subscription next time
                await asyncio.sleep(BACKOFF_S[0] if failures < 3 else BACKOFF_S[1])
                continue
            failures = 0
            for msg in msgs:
                await self._handle_task(msg)

    async def _handle_task(self, msg: Msg) -> None:
        """Submit one task, answer a refused one, ack only when the node holds an answer."""
        self.counters["received"] += 1
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        try:
            raw = dict(TaskEnvelope.decode(msg.data).task)
        except FabricError as exc:
            if msg_id:
                await self._refuse(msg, msg_id, "", exc)
            else:
                log.warning("node %s: dropping an unreadable task message: %s", self.name, exc)
                with contextlib.suppress(Exception):
                    await msg.term()
            return
        creds = raw.get("credentials")
        if isinstance(creds, dict) and "task_id" not in creds and msg_id:
            raw["credentials"] = {**creds, "task_id": msg_id}  # keep redeliveries idempotent
            creds = raw["credentials"]
        task_id = str(creds.get("task_id")) if isinstance(creds, dict) else (msg_id or "")
        tenant = str(creds.get("tenant", "")) if isinstance(creds, dict) else ""
        orc = self._node.orchestrator
        try:
            if await self._held(task_id):
                self.counters["duplicates"] += 1
                log.info("node %s: task %s redelivered; already held", self.name, task_id)
                await self._ack(msg)
                return
            raw = await self._ensure_artifacts(raw, msg)
            await asyncio.to_thread(orc.submit, raw)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if await self._held(task_id):
                await self._ack(msg)  # accepted by an earlier delivery after all
            elif not task_id:
                log.warning("node %s: dropping a task without an id: %s", self.name, exc)
                with contextlib.suppress(Exception):
                    await msg.term()
            elif _refusal(exc):
                await self._refuse(msg, task_id, tenant, exc)
            elif isinstance(exc, (*_TRANSIENT, FabricError)) or self._stopping:
                log.warning("node %s: task %s left for later: %r", self.name, task_id, exc)
                with contextlib.suppress(Exception):
                    await msg.nak(delay=1.0)
            else:
                log.exception("node %s: task %s: unexpected failure at intake", self.name, task_id)
                await self._refuse(msg, task_id, tenant, exc)
            return
        self.counters["accepted"] += 1
        await self._ack(msg)

    async def _held(self, task_id: str) -> bool:
        if not task_id:
            return False
        held: bool = await asyncio.to_thread(self._node.orchestrator.exists, task_id)
        return held

    async def _ack(self, msg: Msg) -> None:
        try:
            await msg.ack()
        except Exception as exc:  # it comes back and is then acked as already held
            log.warning("node %s: ack failed (%r); the task will be redelivered", self.name, exc)

    async def _refuse(self, msg: Msg, task_id: str, tenant: str, exc: BaseException) -> None:
        kind = exc.kind if isinstance(exc, FadesError) else type(exc).__name__
        log.info("node %s: refused task %s: %s: %s", self.name, task_id, kind, exc)
        res = ResultMessage(
            task_id=task_id,
            tenant=tenant,
            node=self.name,
            status="failed",
            error_kind=kind,
            error=str(exc),
            finished_at=time.time(),
        )
        try:
            await self._js.publish(
                result_subject(self.name),
                res.encode(),
                timeout=PUBLISH_TIMEOUT_S,
                headers={"Nats-Msg-Id": f"{task_id}.result"},
            )
        except Exception as pub:
            log.warning("node %s: could not answer refused task %s: %r", self.name, task_id, pub)
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
            return
        self.counters["refused"] += 1
        await self._ack(msg)

    # --- artifacts ---------------------------------------------------------------------------
    async def _ensure_artifacts(self, raw: dict[str, Any], msg: Msg) -> dict[str, Any]:
        """Fetch the task's function (and runtime) from the repository when not held here.

        A function named (not given by digest) that the repository holds is pinned to the
        repository's digest, so the node runs what the repository serves under that name.
        """
        fn = raw.get("function")
        ref = fn.get("artifact") if isinstance(fn, dict) else None
        if not isinstance(fn, dict) or not isinstance(ref, str):
            return raw  # submit names what is wrong
        store = self._node.functions
        if _DIGEST.match(ref):
            digest = ref
        elif _NAME.match(ref):
            try:
                digest = await self._repo().resolve(ref)
            except ArtifactError:
                return raw  # not in the repository: a function installed on this node only
            raw = {**raw, "function": {**fn, "artifact": digest}}
        else:
            return raw
        kind = await asyncio.to_thread(self._local_kind, digest)
        if kind is None:
            with contextlib.suppress(Exception):
                await msg.in_progress()  # a large artifact may take a while
            data = await self._repo().get(digest)
            art = await asyncio.to_thread(store.add, data)
            log.info("node %s: fetched %s (%s) from the repository", self.name, art.name, digest)
            kind = art.kind
        if kind == "python":
            await self._ensure_runtime()
        return raw

    def _local_kind(self, digest: str) -> str | None:
        """The kind of the artifact if this node holds it (verified), else None."""
        store = self._node.functions
        if not (store.dir / f"{digest.removeprefix('sha256:')}.fart").exists():
            return None
        return store.get(digest).kind

    async def _ensure_runtime(self) -> None:
        store = self._node.functions
        try:
            await asyncio.to_thread(store.runtime, PYTHON_ABI)
            return
        except (SignatureError, ArtifactFormatError):
            raise
        except ArtifactError:
            pass  # none held: fetch it
        digest = await self._repo().runtime_digest(PYTHON_ABI)
        data = await self._repo().get(digest)
        await asyncio.to_thread(store.add, data)
        log.info("node %s: fetched the Python runtime %s from the repository", self.name, digest)

    def _repo(self) -> ArtifactRepository:
        if self.repo is None:
            raise FabricError("the artifact repository is not open")
        return self.repo

    # --- results -----------------------------------------------------------------------------
    def _on_finish(self, rec: TaskRecord) -> None:
        """Orchestrator callback (worker thread): hand the task id to the event loop."""
        loop, queue = self._loop, self._finished
        if loop is None or queue is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile; the outbox has it
            loop.call_soon_threadsafe(queue.put_nowait, rec.id)

    def _result(self, rec: TaskRecord) -> bytes:
        res = ResultMessage.from_record(rec, self.name)
        data = res.encode()
        limit = self._nc.max_payload - 4096
        if len(data) > limit:
            data = res.model_copy(
                update={
                    "status": "failed",
                    "result": None,
                    "error_kind": "OrchestratorError",
                    "error": f"the result ({len(data)} bytes) exceeds the fabric's "
                    f"message limit ({limit} bytes); return less data",
                }
            ).encode()
        return data

    async def _publish(self, rec: TaskRecord) -> bool:
        """Publish one result; mark it delivered once JetStream acknowledged it."""
        try:
            await self._js.publish(
                result_subject(self.name),
                self._result(rec),
                timeout=PUBLISH_TIMEOUT_S,
                headers={"Nats-Msg-Id": f"{rec.id}.result"},
            )
        except Exception as exc:
            log.debug("node %s: result %s not delivered yet: %r", self.name, rec.id, exc)
            return False
        await asyncio.to_thread(self._node.orchestrator.store.mark_delivered, rec.id)
        self.counters["published"] += 1
        return True

    async def _publish_loop(self) -> None:
        assert self._finished is not None
        while True:
            task_id = await self._finished.get()
            try:
                rec = await asyncio.to_thread(self._node.orchestrator.get, task_id)
                if rec.done and not rec.delivered:
                    await self._publish(rec)  # a failure stays in the outbox for the sweep
            except FadesError as exc:
                log.warning("node %s: result %s: %s", self.name, task_id, exc)

    async def _flush_outbox(self) -> None:
        """Re-publish every undelivered result (stops at the first failure)."""
        assert self._outbox_lock is not None
        if self._outbox_lock.locked():
            return  # a sweep is already running
        async with self._outbox_lock:
            pending = await asyncio.to_thread(self._node.orchestrator.store.undelivered)
            for rec in pending:
                if not await self._publish(rec):
                    break

    # --- query and ping ----------------------------------------------------------------------
    async def _on_ping(self, msg: Msg) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await reply_json(self._nc, msg.reply, self.info().model_dump(mode="json"))

    async def _on_query(self, msg: Msg) -> None:
        # one task per request, so a long transfer does not hold up the next query
        task = asyncio.create_task(self._serve_query(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _serve_query(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            req = QueryRequest.decode(msg.data)
            blob, meta = await asyncio.to_thread(self._query, req)
            await send_chunks(self._nc, msg.reply, blob, meta.model_dump())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("node %s: query failed: %s", self.name, exc)
            with contextlib.suppress(Exception):
                await reply_error(self._nc, msg.reply, exc)

    def _query(self, req: QueryRequest) -> tuple[bytearray, QueryMeta]:
        """Fetch (policy applies) and encode exactly as a task at the edge would get it."""
        t0 = time.perf_counter()
        datasets, _ = self._node.broker.fetch(req.tenant, list(req.data))
        t1 = time.perf_counter()
        blob = encode(datasets, req.params)
        t2 = time.perf_counter()
        meta = QueryMeta(
            rows=sum(len(ds) for ds in datasets.values()),
            bytes_read=sum(ds.nbytes for ds in datasets.values()),
            blob_bytes=len(blob),
            retrieval_s=t1 - t0,
            encode_s=t2 - t1,
        )
        return blob, meta

    # --- ingest ------------------------------------------------------------------------------
    async def _start_ingest(self) -> None:
        if not self.ingest_enabled:
            return
        try:
            from fades.sensors.ingest import Ingestor
        except ImportError:
            log.info("node %s: sensor ingest is not available (fades.sensors.ingest)", self.name)
            return
        ingestor = Ingestor(self._nc, self._node.readings, self.name)
        try:
            await ingestor.start()
        except Exception as exc:
            log.warning("node %s: sensor ingest did not start: %s", self.name, exc)
            return
        self.ingestor = ingestor


async def _cancel(*tasks: asyncio.Task[None] | None) -> None:
    live = [t for t in tasks if t is not None]
    for t in live:
        t.cancel()
    await asyncio.gather(*live, return_exceptions=True)


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

    asyncio.run(main())
