"""Pipeline writes through the controller log, for several controllers.

:class:`LoggedPipelineStore` is the pipeline service's store when the controller writes
through the log (:mod:`fades.controller.replica`): reads are the local database as before;
each write (a pipeline submitted or ended, runs started or ended, stage events recorded) is
an operation of the log (``pipe_*`` in :mod:`fades.controller.logops`) and returns what
applying it returned, so every controller holds the same pipelines and runs. Its methods
block like the store's: call them off the event loop (the pipeline service does, with
``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from fades.controller.pipestore import PipelineStore, Recorded, RunStatus
from fades.controller.replica import APPLY_TIMEOUT_S, StreamLog
from fades.errors import FabricError
from fades.pipelines.protocol import Plan, StageEvent

if TYPE_CHECKING:
    from fades.pipelines.service import PipelineService

log = logging.getLogger("fades.controller")


class LoggedPipelineStore(PipelineStore):
    """A :class:`PipelineStore` whose writes go through the controller log."""

    def __init__(
        self, local: PipelineStore, log: StreamLog, loop: asyncio.AbstractEventLoop
    ) -> None:
        # reads: the local store's connection (no new one)
        self.path = local.path
        self._db = local._db
        self._lock = local._lock
        self._nested = False
        self._log = log
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def _send(self, op: str, args: dict[str, Any]) -> Any:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("pipeline writes block: call them off the event loop")
        fut = asyncio.run_coroutine_threadsafe(self._log.write(op, args), self._loop)
        deadline = time.monotonic() + APPLY_TIMEOUT_S + 10
        while True:  # in short waits: a loop that stopped meanwhile never answers
            try:
                return fut.result(1.0)
            except concurrent.futures.TimeoutError:
                if not self._loop.is_running() or time.monotonic() > deadline:
                    fut.cancel()
                    raise FabricError(f"the controller log did not apply {op}") from None

    def put(
        self,
        name: str,
        tenant: str,
        spec: dict[str, Any],
        submitted_at: float,
        ends_at: float | None,
        at: float | None = None,
    ) -> None:
        args = {"name": name, "tenant": tenant, "spec": spec, "submitted_at": submitted_at}
        self._send("pipe_put", args | {"ends_at": ends_at, "at": at or time.time()})

    def set_state(self, name: str, state: str, reason: str = "", at: float | None = None) -> None:
        args = {"name": name, "state": state, "reason": reason, "at": at or time.time()}
        self._send("pipe_state", args)

    def new_runs(self, name: str, count: int, started_at: float) -> list[str]:
        ids: list[str] = self._send(
            "pipe_new_runs", {"name": name, "count": count, "started_at": started_at}
        )
        return ids

    def end_run(
        self, name: str, run: str, status: RunStatus, reason: str = "", at: float | None = None
    ) -> bool:
        args = {"name": name, "run": run, "status": status, "reason": reason}
        return bool(self._send("pipe_end_run", args | {"at": at or time.time()}))

    def record_many(self, items: list[tuple[StageEvent, dict[str, set[str]]]]) -> list[Recorded]:
        wire = [
            [ev.model_dump(mode="json"), {k: sorted(v) for k, v in finales.items()}]
            for ev, finales in items
        ]
        out: list[Recorded] = self._send("pipe_record", {"items": wire})
        return out


async def follow_plans(service: PipelineService) -> None:
    """Keep ``service.plans`` current with the plans bucket, which other controllers write
    too (until cancelled)."""
    plans = service.plans
    while True:
        try:
            async for entry in service.kv.watch():
                if entry is None or not entry.value:
                    continue
                known = plans.get(entry.key)
                if known is None or known[1] < entry.revision:
                    with contextlib.suppress(Exception):
                        plans[entry.key] = (Plan.decode(entry.value), entry.revision)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the fabric went away: watch again
            log.debug("watching pipeline plans: %r", exc)
        await asyncio.sleep(1.0)
