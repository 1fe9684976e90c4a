"""A small node agent for controller tests, written directly against the wire protocol.

It registers a NodeInfo in the ``fades_nodes`` bucket and re-puts it every ``heartbeat_s``,
consumes ``fades.task.<name>`` from FADES_TASKS (durable ``node-<name>``), and publishes a
ResultMessage per task. With a node folder it runs tasks on a real :class:`fades.node.Node`
and serves the query subject (cloud path) with ``send_chunks``; without one it only records
the tasks it received and holds the ``data`` it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from fades.errors import FadesError
from fades.fabric import connect
from fades.fabric.protocol import (
    DataHeld,
    NodeInfo,
    NodeLoad,
    QueryMeta,
    QueryRequest,
    ResultMessage,
    TaskEnvelope,
)
from fades.fabric.streams import ensure_streams, nodes_bucket
from fades.fabric.subjects import TASKS_STREAM, query_subject, result_subject, task_subject
from fades.fabric.transfer import reply_error, send_chunks
from fades.node import Node
from fades.node.taskstore import TaskRecord
from fades.sandbox.wire import encode


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


class FakeNode:
    """A node on the fabric, minus everything a controller test does not need."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        home: Path | None = None,
        data: list[DataHeld] | None = None,
        load: NodeLoad | None = None,
        heartbeat_s: float = 0.2,
        consume: bool = True,
    ) -> None:
        self.url = url
        self.name = name
        self.home = home
        self.data = list(data or [])
        self.fixed_load = load
        self.heartbeat_s = heartbeat_s
        self.consume = consume
        self.node: Node | None = None
        self.nc: NATS | None = None
        self.seq = 0
        self.started_at = time.time()
        self.stopping = False
        self.received: list[dict[str, Any]] = []
        self.queries = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> FakeNode:
        self._loop = asyncio.get_running_loop()
        self.nc = await connect(self.url, name=f"fake-{self.name}")
        self.js = self.nc.jetstream()
        await ensure_streams(self.js)
        self.kv = await nodes_bucket(self.js)
        if self.home is not None:
            self.node = await asyncio.to_thread(Node, self.home, capacity=1)
            self.node.orchestrator.on_finish.append(self._on_finish)
            self.data += DataHeld.from_broker(self.node.broker.describe())
            await self.nc.subscribe(query_subject(self.name), cb=self._on_query)
        await self.beat()
        self._heartbeat = asyncio.create_task(self._heartbeats())
        if self.consume:
            self.psub = await self.js.pull_subscribe(
                task_subject(self.name),
                durable=f"node-{self.name}",
                stream=TASKS_STREAM,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=-1),
            )
            self._tasks.append(asyncio.create_task(self._intake()))
        return self

    def info(self) -> NodeInfo:
        if self.fixed_load is not None:
            load = self.fixed_load
        elif self.node is not None:
            load = NodeLoad(**self.node.orchestrator.load, capacity=1)
        else:
            load = NodeLoad()
        return NodeInfo(
            name=self.name,
            arch="x86_64",
            cores=2,
            memory_mib=1024,
            runtimes=["fades-py/1", "fades-core/1"],
            labels={"fake": "yes"},
            data=self.data,
            load=load,
            started_at=self.started_at,
            heartbeat_at=time.time(),
            heartbeat_s=self.heartbeat_s,
            seq=self.seq,
            stopping=self.stopping,
        )

    async def beat(self) -> None:
        self.seq += 1
        await self.kv.put(self.name, self.info().encode())

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            with contextlib.suppress(Exception):
                await self.beat()

    async def pause_heartbeats(self) -> None:
        """Go silent without saying so (a crashed or cut-off node)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None

    async def stop(self, clean: bool = True) -> None:
        await self.pause_heartbeats()
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if clean:
            self.stopping = True
            with contextlib.suppress(Exception):
                await self.beat()
        if self.node is not None:
            await asyncio.to_thread(self.node.close)
            self.node = None
        if self.nc is not None:
            await self.nc.close()
            self.nc = None

    # --- tasks and results --------------------------------------------------------------------
    async def _intake(self) -> None:
        while True:
            try:
                msgs = await self.psub.fetch(1, timeout=0.5)
            except TimeoutError:
                continue
            for msg in msgs:
                env = TaskEnvelope.decode(msg.data)
                self.received.append(env.task)
                if self.node is not None:
                    try:
                        await asyncio.to_thread(self.node.orchestrator.submit, env.task)
                    except FadesError as exc:  # refused: answer with a failed result, then ack
                        cred = env.task["credentials"]
                        await self.publish(
                            ResultMessage(
                                task_id=cred["task_id"],
                                tenant=cred["tenant"],
                                node=self.name,
                                status="failed",
                                error_kind=exc.kind,
                                error=str(exc),
                            )
                        )
                await msg.ack()

    async def publish(self, res: ResultMessage, msg_id: str | None = None) -> None:
        assert self.nc is not None
        await self.js.publish(
            result_subject(self.name),
            res.encode(),
            headers={"Nats-Msg-Id": msg_id or f"{res.task_id}.result"},
        )

    def _on_finish(self, rec: TaskRecord) -> None:
        res = ResultMessage.from_record(rec, self.name)
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self.publish(res), self._loop)

    # --- cloud path ---------------------------------------------------------------------------
    async def _on_query(self, msg: Msg) -> None:
        self.queries += 1
        try:
            req = QueryRequest.decode(msg.data)
            blob, meta = await asyncio.to_thread(self._query, req)
        except FadesError as exc:
            await reply_error(self.nc, msg.reply, exc)  # type: ignore[arg-type]
            return
        await send_chunks(self.nc, msg.reply, blob, meta.model_dump())  # type: ignore[arg-type]

    def _query(self, req: QueryRequest) -> tuple[bytearray, QueryMeta]:
        assert self.node is not None
        t0 = time.perf_counter()
        datasets, _ = self.node.broker.fetch(req.tenant, list(req.data))
        t1 = time.perf_counter()
        blob = encode(datasets, req.params)
        return blob, QueryMeta(
            rows=sum(len(ds) for ds in datasets.values()),
            bytes_read=sum(ds.nbytes for ds in datasets.values()),
            blob_bytes=len(blob),
            retrieval_s=t1 - t0,
            encode_s=time.perf_counter() - t1,
        )
