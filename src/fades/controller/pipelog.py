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
import threading
import time
from typing import Any

from fades.controller.pipestore import PipelineStore, Recorded, RunStatus
from fades.controller.replica import APPLY_TIMEOUT_S, StreamLog
from fades.pipelines.protocol import StageEvent


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
        return fut.result(APPLY_TIMEOUT_S + 10)

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
