"""The orchestrator (ORC): the only way into a node.

It validates a task, checks the tenant's access and the function's signature, records the
task durably, and schedules it. Worker threads (``capacity`` of them) fetch the data through
the broker, run the function in a fresh sandbox and record the result with a timing
breakdown. wasmtime and SQLite release the GIL, so workers really run in parallel.

A failure of one task (bad data, a trapped or over-budget function) fails that task with its
reason; the node keeps serving. On start, tasks left ``accepted`` or ``running`` by a crash are
resumed; a task that was already interrupted ``max_attempts`` times is failed with that reason.

Persistent tasks are bounded: by their ``invocations``, their ``max_duration_s`` and the node's
``max_persistent_seconds`` (counted from acceptance), and :meth:`Orchestrator.cancel` ends one
after its current invocation (status ``failed``, kind ``TaskCancelled``). A task submitted with
``one_shot=True`` (a CLI run) lives only as long as that run: when the run ends it is cancelled,
and if the process died instead, the next orchestrator on the folder fails it (kind
``TaskCancelled``) rather than reviving it.

This module is one unit (about 460 lines): intake, recovery, the worker loop and cancel share the
queue, the store and their locks; the persistent loop lives in ``node/persistent.py``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fades.broker.base import Dataset
from fades.broker.broker import DataBroker
from fades.errors import (
    FadesError,
    NoData,
    OrchestratorError,
    TaskCancelled,
    TaskNotFound,
    TaskValidationError,
)
from fades.functions.store import FunctionStore
from fades.node.limits import NodeLimits
from fades.node.persistent import run_persistent
from fades.node.scheduler import ReadyQueue, SchedulingPolicy, get_policy
from fades.node.taskstore import TaskRecord, TaskStore
from fades.sandbox import Sandboxes
from fades.sandbox.base import Limits
from fades.sandbox.pool import host_limits as pool_host
from fades.sandbox.wire import encode
from fades.state.base import Checkpoints
from fades.task import Task, parse_task, parse_task_text

log = logging.getLogger("fades.node")

TIMING_KEYS = ("queue", "retrieval", "transfer", "start", "compute", "result", "total")
#: a ``prepare`` row is added when getting the function ready for this task (verifying,
#: loading or compiling it on first use) took at least this long, outside the other rows
PREPARE_ROW_S = 0.05
#: Tasks submitted by a one-shot run and the process id of that run (a side table of
#: tasks.db): never resumed by another run, and left alone while their run is alive.
_ONE_SHOT_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS one_shot_tasks (id TEXT PRIMARY KEY, pid INTEGER NOT NULL)"
)
#: How long ``run(one_shot=True)`` waits for a cancelled persistent task's current invocation.
_CANCEL_GRACE_S = 5.0
#: Cancel requests, so that another process on the folder (``fades task cancel``) can cancel.
_CANCEL_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cancel_requests (id TEXT PRIMARY KEY, reason TEXT NOT NULL)"
)


class Orchestrator:
    """Accepts, schedules, runs and records tasks on one node.

    Args:
        broker: the node's data broker (connectors plus access policy).
        functions: the node's verified artifact store.
        db: path of the SQLite task database.
        capacity: tasks run at the same time.
        python_pool: ``node.yaml``'s ``python_pool`` (ready Python instances per worker).
        policy: ``"fifo"``, ``"priority"``, ``"edf"`` or a :class:`SchedulingPolicy`.
        max_attempts: runs interrupted by a crash before a task is failed instead of resumed.
        autostart: start the workers now (tests pass False to queue work first).
        limits: what one task's input may cost (default: :meth:`NodeLimits.load` without a
            folder, i.e. the defaults and ``FADES_LIMIT_*`` variables).
    """

    def __init__(
        self,
        *,
        broker: DataBroker,
        functions: FunctionStore,
        db: str | Path,
        capacity: int = 2,
        policy: str | SchedulingPolicy = "fifo",
        max_attempts: int = 2,
        autostart: bool = True,
        limits: NodeLimits | None = None,
        checkpoints: Checkpoints | None = None,
        node_name: str = "local",
        python_pool: Mapping[str, int] | None = None,
    ) -> None:
        if capacity < 1:
            raise OrchestratorError("capacity must be at least 1")
        self.limits = limits if limits is not None else NodeLimits.load()
        self.broker = broker
        self.functions = functions
        try:
            host = pool_host(python_pool)
        except ValueError as exc:
            raise OrchestratorError(str(exc)) from None
        self.sandboxes = Sandboxes(functions, workers=capacity, host=host)
        self.store = TaskStore(db)
        #: where stateful tasks keep checkpoints (default: ``state.db`` beside ``tasks.db``,
        #: opened on first use); the node agent sets the fabric's KV store
        self._checkpoints = checkpoints
        self._state_dir = Path(db).parent
        #: the name leases are taken in (the agent sets the node's name)
        self.node_name = node_name
        self.capacity = capacity
        self.max_attempts = max_attempts
        self.queue = ReadyQueue(get_policy(policy))
        self._threads: list[threading.Thread] = []
        #: wait()'s conditions, one per task waited for (with how many waits share it), all
        #: on one lock: a task's end wakes only its own waiters (a wake-up re-reads the record)
        self._done = threading.Lock()
        self._waiting: dict[str, tuple[threading.Condition, int]] = {}
        self._stop = threading.Event()
        self._running = 0
        self._lock = threading.Lock()
        self.on_finish: list[Callable[[TaskRecord], None]] = []
        self._cancelled: dict[str, str] = {}  # task id: why
        self._wake = threading.Condition(self._lock)
        self._one_shot: set[str] = set()
        self._closed = False
        self.store._exec(_ONE_SHOT_SCHEMA)
        self.store._exec(_CANCEL_SCHEMA)
        self._recover()
        if autostart:
            self.start()

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker threads (idempotent)."""
        if self._threads:
            return
        self.sandboxes.warm()
        for i in range(self.capacity):
            t = threading.Thread(target=self._worker, name=f"fades-orc-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def drain(self, timeout: float = 10.0) -> None:
        """Stop taking work and let running tasks finish (up to ``timeout``); the database
        stays open, so results can still be read.

        Tasks still queued stay ``accepted`` in the database and resume on the next start.
        """
        self._stop.set()
        self.queue.close()
        with self._wake:
            self._wake.notify_all()  # persistent tasks waiting for their next period
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 10.0, *, cancel_persistent: bool = False) -> None:
        """:meth:`drain`, then close the database.

        Tasks submitted here with ``one_shot=True`` that are still going are cancelled first;
        ``cancel_persistent`` cancels every persistent task this node is running or holds.
        Closing again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        with self._lock:
            owned = set(self._one_shot)
        if cancel_persistent:
            owned |= {r.id for r in self.store.active() if _persistent(r.task)}
        self._cancel_all(owned, "the node was closed")
        self.drain(timeout)
        self.sandboxes.close()
        self.store.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def checkpoints(self) -> Checkpoints:
        with self._lock:
            if self._checkpoints is None:
                from fades.state.local import LocalCheckpoints
                from fades.state.seal import state_key

                self._checkpoints = LocalCheckpoints(
                    self._state_dir / "state.db", state_key(self._state_dir)
                )
            return self._checkpoints

    @checkpoints.setter
    def checkpoints(self, store: Checkpoints) -> None:
        with self._lock:
            self._checkpoints = store

    @property
    def load(self) -> dict[str, int]:
        """Running tasks and queue depth (what a node reports in its heartbeat)."""
        with self._lock:
            return {"running": self._running, "queued": len(self.queue)}

    # --- intake ------------------------------------------------------------------------------
    def validate(self, task: Task | dict[str, Any] | str) -> Task:
        """Everything ``submit`` checks, without accepting the task.

        Raises:
            TaskValidationError, AccessDenied, ConnectorError, ArtifactError, SignatureError,
            InputTooLarge (more data operations than the node allows).
        """
        if isinstance(task, str):
            task = parse_task_text(task)
        elif isinstance(task, dict):
            task = parse_task(task)
        self.broker.check(
            task.tenant, list(task.data), self.limits.fetch_limits(task.function.memory_mib)
        )
        artifact = self.functions.get(task.function.artifact)
        self.sandboxes.check(artifact, _limits(task))
        return task

    def submit(self, task: Task | dict[str, Any] | str, *, one_shot: bool = False) -> str:
        """Validate and accept a task; returns its id once it is durably recorded.

        ``one_shot``: the task belongs to this run (a CLI invocation). It is cancelled when
        :meth:`close` is called, and never resumed by another orchestrator on the folder.
        """
        if self._stop.is_set():
            raise OrchestratorError("the node is shutting down and accepts no new tasks")
        task = self.validate(task)
        if one_shot:  # marked before it is accepted: a crash in between leaves no orphan
            self.store._exec(
                "INSERT OR IGNORE INTO one_shot_tasks(id, pid) VALUES (?, ?)",
                (task.id, os.getpid()),
            )
            with self._lock:
                self._one_shot.add(task.id)
        self.store.accept(task.id, task.tenant, task.to_json())
        self.queue.put(task)
        log.info("accepted task %s from %s", task.id, task.tenant)
        return task.id

    def submit_many(self, tasks: list[dict[str, Any]]) -> list[str | Exception]:
        """Validate and accept a burst of tasks with ONE commit of the task store.

        Per task, in order: its id once durably recorded, or the exception :meth:`submit`
        would have raised for it (the others are accepted regardless)."""
        if self._stop.is_set():
            err = OrchestratorError("the node is shutting down and accepts no new tasks")
            return [err for _ in tasks]
        out: list[str | Exception] = []
        valid: list[tuple[int, Task]] = []
        for i, raw in enumerate(tasks):
            try:
                valid.append((i, self.validate(raw)))
                out.append("")
            except Exception as exc:
                out.append(exc)
        stored = self.store.accept_many([(t.id, t.tenant, t.to_json()) for _, t in valid])
        for (i, task), ok in zip(valid, stored, strict=True):
            if not ok:
                out[i] = TaskValidationError(
                    f"a task with id {task.id!r} already exists on this node",
                    problems=[("credentials.task_id", "already used")],
                    task_id=task.id,
                )
                continue
            self.queue.put(task)
            out[i] = task.id
            log.info("accepted task %s from %s", task.id, task.tenant)
        return out

    def get(self, task_id: str) -> TaskRecord:
        return self.store.get(task_id)

    def exists(self, task_id: str) -> bool:
        """True if a task with this id was ever accepted here."""
        return self.store.exists(task_id)

    def wait(self, task_id: str, timeout: float | None = None) -> TaskRecord:
        """Block until the task is done or failed (or ``timeout`` elapses)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            cond, n = self._waiting.get(task_id) or (threading.Condition(self._done), 0)
            self._waiting[task_id] = (cond, n + 1)
            try:
                while True:  # the 0.5 s poll also sees ends recorded by another process
                    rec = self.store.get(task_id)
                    if rec.done:
                        return rec
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return rec
                    cond.wait(0.5 if remaining is None else min(0.5, remaining))
            finally:
                cond, n = self._waiting.pop(task_id)
                if n > 1:
                    self._waiting[task_id] = (cond, n - 1)

    def run(
        self,
        task: Task | dict[str, Any] | str,
        timeout: float | None = None,
        *,
        one_shot: bool = False,
    ) -> TaskRecord:
        """Submit and wait: the synchronous Python API.

        With ``one_shot`` (what a CLI run uses), a task still going when the wait ends (the
        timeout, or an interrupt such as Ctrl-C) is cancelled and its final record returned.
        """
        task_id = self.submit(task, one_shot=one_shot)
        if not one_shot:
            return self.wait(task_id, timeout)
        try:
            rec = self.wait(task_id, timeout)
        finally:
            self._cancel_all({task_id}, "the one-shot run that started it ended")
        return rec if rec.done else self.wait(task_id, _CANCEL_GRACE_S)

    def invocations(self, task_id: str) -> list[dict[str, Any]]:
        """Recorded invocations of a persistent task."""
        self.store.get(task_id)
        return self.store.invocations(task_id)

    def cancel(self, task_id: str, reason: str = "on request") -> None:
        """Cancel a task: one not yet started is failed now; a running persistent task stops
        after its current invocation. Either ends ``failed`` with kind ``TaskCancelled``.

        A running ephemeral task is not interrupted (its time budget bounds it); a finished
        task is left as it is. The request is recorded in ``tasks.db``, so an orchestrator in
        another process on the same folder (a running node) honours it within a second.

        Raises:
            TaskNotFound: no task with this id.
        """
        rec = self.store.get(task_id)
        if rec.done:
            return
        if rec.status == "accepted":
            self.store.fail(
                task_id, TaskCancelled.__name__, f"cancelled before it started: {reason}"
            )
            self._notify(task_id)
        self.store._exec(
            "INSERT OR IGNORE INTO cancel_requests(id, reason) VALUES (?, ?)", (task_id, reason)
        )
        with self._wake:
            self._cancelled.setdefault(task_id, reason)
            self._wake.notify_all()

    def _cancel_all(self, ids: set[str], reason: str) -> None:
        for task_id in sorted(ids):
            try:
                self.cancel(task_id, reason)
            except TaskNotFound:
                continue

    def _cancel_requested(self, task_id: str) -> bool:
        """Take a cancel request recorded by another process into ``_cancelled`` (the caller
        holds ``_wake``)."""
        row = self.store._exec(
            "SELECT reason FROM cancel_requests WHERE id=?", (task_id,)
        ).fetchone()
        if row is not None:
            self._cancelled.setdefault(task_id, str(row[0]))
        return row is not None

    # --- recovery ----------------------------------------------------------------------------
    def _recover(self) -> None:
        rows = self.store._exec("SELECT id, pid FROM one_shot_tasks").fetchall()
        one_shot = {str(r[0]): int(r[1]) for r in rows}
        for rec in self.store.active():
            if rec.id in one_shot:
                if _alive(one_shot[rec.id]):
                    continue  # another one-shot run, still going, owns it
                self.store.fail(
                    rec.id,
                    TaskCancelled.__name__,
                    "cancelled: the one-shot run that started it ended before it finished; "
                    "not resumed",
                )
                continue
            if rec.status == "running" and rec.attempts >= self.max_attempts:
                self.store.fail(
                    rec.id,
                    "OrchestratorError",
                    f"the node stopped while this task was running "
                    f"({rec.attempts} of {self.max_attempts} attempts); not retried again",
                )
                continue
            try:
                task = parse_task(rec.task)
            except FadesError as exc:  # schema changed under a stored task
                self.store.fail(rec.id, exc.kind, f"cannot resume after restart: {exc}")
                continue
            log.info("resuming task %s (%s) after restart", rec.id, rec.status)
            self.queue.put(task)

    # --- execution ---------------------------------------------------------------------------
    def _worker(self) -> None:
        while not self._stop.is_set():
            task = self.queue.get(timeout=0.5)
            if task is None:
                continue
            with self._lock:
                self._running += 1
            try:
                if task.function.mode == "persistent":
                    self._run_persistent(task)
                else:
                    self._run_once(task)
            except Exception as exc:
                log.exception("task %s: unexpected failure", task.id)
                self.store.fail(task.id, type(exc).__name__, f"internal error: {exc}")
            finally:
                with self._lock:
                    self._running -= 1
                self._notify(task.id)

    def _notify(self, task_id: str) -> None:
        with self._done:
            waiting = self._waiting.get(task_id)
            if waiting is not None:
                waiting[0].notify_all()
        if not self.on_finish:
            return  # nobody to call back: skip re-reading the record on the hot path
        try:
            rec = self.store.get(task_id)
        except TaskNotFound:
            return
        if rec.done:
            for cb in self.on_finish:
                cb(rec)

    def _late(self, task: Task) -> bool:
        dl = task.credentials.deadline
        if dl is not None and datetime.now(UTC) > dl:
            self.store.fail(
                task.id,
                "DeadlineMissed",
                f"deadline {dl.isoformat()} passed before the task could start",
            )
            return True
        return False

    def _fetch(self, task: Task) -> tuple[bytearray, dict[str, float], int]:
        t0 = time.perf_counter()
        datasets: dict[str, Dataset] = {}
        if task.data:
            datasets, _ = self.broker.fetch(
                task.tenant,
                list(task.data),
                limits=self.limits.fetch_limits(task.function.memory_mib),
            )
        empty = [op.name for op in task.data if not op.allow_empty and not len(datasets[op.name])]
        if empty:
            why = [
                f"{op.name}: {reason}"
                for op in task.data
                if op.name in empty and (reason := self.broker.explain_empty(task.tenant, op))
            ]
            raise NoData(
                f"no rows matched data operation(s) {', '.join(empty)}"
                + (f" ({'; '.join(why)})" if why else "")
                + "; check the selection (location, sensor type, time window), or set "
                "'allow_empty: true' on the operation to run the function on empty data"
            )
        t1 = time.perf_counter()
        blob = encode(datasets, task.function.params, task.inputs)
        t2 = time.perf_counter()
        bytes_read = sum(ds.nbytes for ds in datasets.values())
        return blob, {"retrieval": t1 - t0, "encode": t2 - t1}, bytes_read

    def _run_once(self, task: Task) -> None:
        if task.credentials.deadline is not None:
            rec = self.store.get(task.id)
            if rec.done or self._late(task):
                return
            self.store.start(task.id)
            accepted_at = rec.accepted_at
        else:  # one statement: read nothing back but the acceptance time
            claimed = self.store.claim(task.id)
            if claimed is None:
                return  # finished meanwhile (cancelled, or run by an earlier attempt)
            accepted_at = claimed
        timing: dict[str, float] = {"queue": time.time() - accepted_at}
        t0 = time.perf_counter()
        digest: str | None = None
        bytes_read = 0  # what the node read, also when the function then fails on it
        try:
            artifact = self.functions.get(task.function.artifact)
            digest = artifact.digest
            t_got = time.perf_counter()
            blob, fetch_t, bytes_read = self._fetch(task)
            t_run = time.perf_counter()
            res = self.sandboxes.run(artifact, blob, _limits(task))
            # what the sandbox spent outside the function's own phases: getting it ready
            prepare = t_got - t0 + time.perf_counter() - t_run - sum(res.timing.values())
        except FadesError as exc:
            timing["total"] = time.perf_counter() - t0
            self.store.fail(
                task.id,
                exc.kind,
                str(exc),
                timing,
                digest=digest,
                traceback=getattr(exc, "traceback", None) or exc.context.get("traceback"),
                logs=getattr(exc, "logs", None) or exc.context.get("logs"),
                bytes_read=bytes_read,
            )
            log.info("task %s failed: %s: %s", task.id, exc.kind, exc)
            return
        timing.update(
            retrieval=fetch_t["retrieval"],
            transfer=fetch_t["encode"] + res.timing["transfer"],
            start=res.timing["start"],
            compute=res.timing["compute"],
            result=res.timing["result"],
            total=time.perf_counter() - t0,
        )
        if prepare >= PREPARE_ROW_S:
            timing["prepare"] = prepare
        self.store.finish(
            task.id,
            result=res.value,
            timing=timing,
            bytes_read=bytes_read,
            bytes_returned=res.bytes_out,
            digest=artifact.digest,
            logs=res.logs,
        )

    def _run_persistent(self, task: Task) -> None:
        run_persistent(self, task)


def _alive(pid: int) -> bool:
    """True if process ``pid`` (not this one) exists."""
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _persistent(task_json: dict[str, Any]) -> bool:
    fn = task_json.get("function")
    return isinstance(fn, dict) and fn.get("mode") == "persistent"


def _limits(task: Task) -> Limits:
    return Limits(task.function.memory_mib, task.function.time_budget_ms)
