"""The cloud path: pull a task's raw data from the node that holds it, run the function here.

A task that reads no node's data (compute-only: its ``inputs`` travel with it) runs here on
those inputs alone, with no pull (``node`` is ``cloud``; ``retrieval`` is only the encoding).

The controller asks the node's broker for the FDS1 blob the function would get at the edge
(``query_subject(node)``, chunked and flow-controlled), then runs the same artifact in its own
sandboxes, in a worker thread. Artifacts come from the repository through
:class:`~fades.fabric.sync.ArtifactSync` (the one download path nodes use too) and are
verified against the controller's trust store (``<home>/trusted``) into its function store
(``<home>/artifacts``).

Timing keys (seconds): ``queue`` (submit -> a cloud worker is free), ``retrieval`` (the remote
fetch through the fabric: node retrieval + encode + network), ``node_retrieval`` and
``node_encode`` (the node's share of it), ``transfer``, ``start``, ``compute``, ``result`` (in
the controller's sandbox), ``total`` (retrieval through result).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from fades.bus.base import Bus
from fades.errors import FadesError
from fades.fabric.protocol import QueryMeta, QueryRequest, decode_query_reply
from fades.fabric.repository import ArtifactRepository
from fades.fabric.subjects import query_subject
from fades.fabric.sync import ArtifactSync
from fades.functions.store import FunctionStore
from fades.outcome import Outcome
from fades.sandbox import Limits, Sandboxes
from fades.sandbox.wire import encode
from fades.task import Task

log = logging.getLogger("fades.controller")

#: seconds to wait for the first part of a node's reply (it fetches and encodes first)
FIRST_PART_TIMEOUT_S = 30.0


class CloudRunner:
    """Runs tasks in the controller on data pulled from a node.

    Args:
        bus: the controller's fabric connection.
        repo: the function repository.
        functions: the controller's verified function store.
        capacity: cloud tasks run at the same time (each in a worker thread).
    """

    def __init__(
        self, bus: Bus, repo: ArtifactRepository, functions: FunctionStore, capacity: int = 2
    ) -> None:
        self.bus = bus
        self.sync = ArtifactSync(repo, functions, "controller")
        self.functions = functions
        self.sandboxes = Sandboxes(functions)
        self.capacity = max(1, capacity)
        self._pool = ThreadPoolExecutor(self.capacity, thread_name_prefix="fades-cloud")
        self._slots = asyncio.Semaphore(self.capacity)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(
        self, task: Task, node: str, submitted_at: float, digest: str
    ) -> tuple[Outcome, int]:
        """Fetch the task's data from ``node`` and run the function ``digest`` (pinned at
        submit) here; returns the outcome and the bytes pulled from the node. Never raises."""
        async with self._slots:
            timing: dict[str, float] = {"queue": max(0.0, time.time() - submitted_at)}
            t0 = time.perf_counter()
            blob_bytes = 0
            try:
                loop = asyncio.get_running_loop()
                art = await self.sync.artifact(digest)
                limits = Limits(task.function.memory_mib, task.function.time_budget_ms)
                # loads the Python runtime once, before the clock starts (as a warm node has)
                await loop.run_in_executor(self._pool, self.sandboxes.check, art, limits)
                t0 = time.perf_counter()
                if task.data:
                    request = QueryRequest(
                        tenant=task.tenant, data=list(task.data), params=task.function.params
                    )
                    reply = await self.bus.request(
                        query_subject(node), request.encode(), timeout=FIRST_PART_TIMEOUT_S
                    )
                    t1 = time.perf_counter()
                    blob, meta = decode_query_reply(reply)
                    blob_bytes = len(blob)
                    data: bytes | bytearray = blob
                else:  # compute-only: its inputs came with it; nothing to pull
                    data = encode({}, task.function.params, task.inputs)
                    t1 = time.perf_counter()
                    meta = QueryMeta(
                        rows=0, bytes_read=0, blob_bytes=0, retrieval_s=0.0, encode_s=t1 - t0
                    )
                res = await loop.run_in_executor(self._pool, self.sandboxes.run, art, data, limits)
            except FadesError as exc:
                log.info("cloud task %s failed: %s: %s", task.id, exc.kind, exc)
                out = self._failed(task, node, digest, exc.kind, str(exc), timing, t0)
                return out, blob_bytes
            except Exception as exc:
                log.exception("cloud task %s: unexpected failure", task.id)
                kind, msg = type(exc).__name__, f"internal error: {exc}"
                return self._failed(task, node, digest, kind, msg, timing, t0), blob_bytes
            timing.update(
                retrieval=t1 - t0,
                node_retrieval=meta.retrieval_s,
                node_encode=meta.encode_s,
                transfer=res.timing["transfer"],
                start=res.timing["start"],
                compute=res.timing["compute"],
                result=res.timing["result"],
                total=time.perf_counter() - t0,
            )
            out = Outcome(
                task_id=task.id,
                tenant=task.tenant,
                node="cloud",
                status="done",
                result=res.value,
                timing=timing,
                bytes_read=meta.bytes_read,
                bytes_returned=res.bytes_out,
                digest=digest,
                finished_at=time.time(),
            )
            return out, blob_bytes

    @staticmethod
    def _failed(
        task: Task,
        node: str,
        digest: str,
        kind: str,
        message: str,
        timing: dict[str, float],
        t0: float,
    ) -> Outcome:
        timing["total"] = time.perf_counter() - t0
        return Outcome(
            task_id=task.id,
            tenant=task.tenant,
            node="cloud",
            status="failed",
            error_kind=kind,
            error=message,
            timing=timing,
            digest=digest,
            finished_at=time.time(),
        )
