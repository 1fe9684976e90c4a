"""Running one stage instance as a task on the node's orchestrator.

The task id is :func:`~fades.pipelines.protocol.stage_task_id`, so a redelivered bundle finds
the execution that already ran (or is running) and reuses its outcome instead of running the
stage again. The task carries the plan's tenant and priority (the orchestrator's priority
scheduling serves a higher-priority pipeline's stages first), a deadline at the run's
deadline, the stage's data operations, the upstream values as ``inputs`` and the run context
as ``data["_pipeline"]`` (which also marks it as a stage task, kept out of the controller's
results). The function is pinned to the repository's digest, fetched like intake does.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fades.aiostop import wait_for
from fades.errors import TaskNotFound
from fades.node.taskstore import TaskRecord
from fades.pipelines.protocol import Plan, stage_task_id
from fades.pipelines.routing import CONTEXT_INPUT
from fades.pipelines.spec import PipelineSpec

if TYPE_CHECKING:
    from fades.node.agent import NodeAgent


class StageRunner:
    """Submits stage tasks and waits for them without holding a thread per wait."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.agent.require_node().orchestrator.on_finish.append(self._on_finish)

    def _on_finish(self, rec: TaskRecord) -> None:  # a worker thread
        loop = self._loop
        if loop is None or loop.is_closed() or rec.id not in self._waiting:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake, rec.id)

    def _wake(self, task_id: str) -> None:
        for fut in self._waiting.pop(task_id, []):
            if not fut.done():
                fut.set_result(None)

    async def task(
        self,
        plan: Plan,
        spec: PipelineSpec,
        stage: str,
        instance: str,
        run: str,
        run_started_at: float,
        inputs: dict[str, Any],
    ) -> dict[str, Any]:
        """The stage's task (function pinned to the repository's digest when it has one)."""
        st = spec.stage(stage)
        creds: dict[str, Any] = {
            "tenant": plan.tenant,
            "task_id": stage_task_id(plan.pipeline, run, stage, instance),
            "priority": spec.priority,
        }
        deadline_s = spec.run.run_deadline_s
        if deadline_s is not None:
            creds["deadline"] = datetime.fromtimestamp(run_started_at + deadline_s, UTC).isoformat()
        fn = st.function.model_dump(mode="json", exclude_none=True)
        sync = self.agent.require_sync()
        digest = await sync.resolve(st.function.artifact)
        if digest is not None:
            await sync.artifact(digest)
            fn["artifact"] = digest
        context = {
            "pipeline": plan.pipeline,
            "run": run,
            "stage": stage,
            "instance": instance,
            "node": self.agent.name,
        }
        return {
            "credentials": creds,
            "data": [op.model_dump(mode="json", exclude_none=True) for op in st.data],
            "inputs": {**inputs, CONTEXT_INPUT: context},
            "function": fn,
        }

    async def run(self, task_id: str, build: Any) -> tuple[TaskRecord, bool]:
        """The finished record of ``task_id``: an existing one's (a redelivery), else the
        record of the task ``await build()`` returns, submitted now; and whether it was
        submitted now."""
        orc = self.agent.require_node().orchestrator
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(task_id, []).append(fut)
        try:
            fresh = not await asyncio.to_thread(orc.exists, task_id)
            if fresh:
                task = await build()
                await asyncio.to_thread(orc.submit, task)
            while True:
                rec = await asyncio.to_thread(orc.get, task_id)
                if rec.done:
                    return rec, fresh
                with contextlib.suppress(TimeoutError):
                    await wait_for(asyncio.shield(fut), 5.0)  # callback, or a re-check
                if fut.done():
                    fut = asyncio.get_running_loop().create_future()
                    self._waiting.setdefault(task_id, []).append(fut)
        except TaskNotFound:
            raise
        finally:
            waiters = self._waiting.get(task_id)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)
                if not waiters:
                    self._waiting.pop(task_id, None)
