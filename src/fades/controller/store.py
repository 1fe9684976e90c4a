"""The controller's durable state: ``controller.db`` (SQLite).

* ``tasks``: every accepted task, where it was placed and why, edge or cloud, and whether it
  was handed to JetStream yet (``accepted`` -> ``dispatched``);
* ``results``: the first result per task id. Later copies (results are delivered at least
  once) are ignored, so a result is stored exactly once.

A task is recorded before it is dispatched, so a restarted controller re-publishes what it
had accepted but not yet handed over, and re-runs cloud tasks that had not finished.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fades.controller.models import TaskInfo, Where
from fades.errors import DuplicateTask, TaskNotFound
from fades.node.taskstore import open_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    node          TEXT NOT NULL,
    location      TEXT NOT NULL CHECK (location IN ('edge', 'cloud')),
    status        TEXT NOT NULL,
    task          TEXT NOT NULL,
    placement     TEXT NOT NULL,
    submitted_at  REAL NOT NULL,
    dispatched_at REAL
);
CREATE INDEX IF NOT EXISTS tasks_by_tenant ON tasks (tenant, submitted_at);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status);
CREATE TABLE IF NOT EXISTS results (
    task_id        TEXT PRIMARY KEY,
    tenant         TEXT NOT NULL,
    node           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    result         TEXT,
    error_kind     TEXT,
    error          TEXT,
    timing         TEXT NOT NULL,
    bytes_read     INTEGER,
    bytes_returned INTEGER,
    accepted_at    REAL,
    finished_at    REAL,
    stored_at      REAL NOT NULL,
    latency_s      REAL,
    bytes_uplink   INTEGER
);
"""

_SELECT = """
SELECT t.id, t.tenant, t.node, t.location, t.status, t.placement, t.submitted_at,
       r.status, r.result, r.error_kind, r.error, r.timing, r.bytes_read, r.bytes_returned,
       r.finished_at, r.latency_s, r.bytes_uplink
FROM tasks t LEFT JOIN results r ON r.task_id = t.id
"""


@dataclass(slots=True, frozen=True)
class Outcome:
    """How a task ended, as a node (or the cloud runner) reports it."""

    task_id: str
    tenant: str
    node: str
    status: str
    result: Any = None
    error_kind: str | None = None
    error: str | None = None
    timing: dict[str, float] | None = None
    bytes_read: int | None = None
    bytes_returned: int | None = None
    accepted_at: float | None = None
    finished_at: float | None = None
    bytes_uplink: int | None = None


@dataclass(slots=True, frozen=True)
class PendingTask:
    """A task recorded but not finished: what a restart needs to resume it."""

    id: str
    node: str
    where: Where
    task: dict[str, Any]
    submitted_at: float


class ControllerStore:
    """Tasks and results in one SQLite file (safe to call from several threads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = open_sqlite(self.path)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- tasks -------------------------------------------------------------------------------
    def add_task(
        self,
        task_id: str,
        *,
        tenant: str,
        node: str,
        where: Where,
        task: dict[str, Any],
        placement: str,
        submitted_at: float,
    ) -> None:
        """Record an accepted task.

        Raises:
            DuplicateTask: a task with this id was recorded before.
        """
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO tasks (id, tenant, node, location, status, task, placement,"
                    " submitted_at) VALUES (?, ?, ?, ?, 'accepted', ?, ?, ?)",
                    (task_id, tenant, node, where, json.dumps(task), placement, submitted_at),
                )
        except sqlite3.IntegrityError:
            raise DuplicateTask(
                f"task id {task_id!r} was already submitted; task ids must be unique",
                task_id=task_id,
            ) from None

    def exists(self, task_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return row is not None

    def mark_dispatched(self, task_id: str, at: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET status = 'dispatched', dispatched_at = ? "
                "WHERE id = ? AND status = 'accepted'",
                (time.time() if at is None else at, task_id),
            )

    def pending(self, where: Where) -> list[PendingTask]:
        """Unfinished tasks: edge ones not yet dispatched, or cloud ones not yet done."""
        status = ("accepted",) if where == "edge" else ("accepted", "dispatched")
        marks = ",".join("?" * len(status))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, node, task, submitted_at FROM tasks WHERE location = ? "
                f"AND status IN ({marks}) ORDER BY submitted_at",
                (where, *status),
            ).fetchall()
        return [PendingTask(r[0], r[1], where, json.loads(r[2]), r[3]) for r in rows]

    # --- results -----------------------------------------------------------------------------
    def add_result(self, out: Outcome, stored_at: float | None = None) -> bool:
        """Store the first result of a task; returns False for a duplicate (ignored).

        The timing breakdown gains ``dispatch`` (submit -> the node accepted it) and
        ``latency`` (submit -> result stored) when the task was submitted here.
        """
        now = time.time() if stored_at is None else stored_at
        timing = dict(out.timing or {})
        with self._lock:
            row = self._db.execute(
                "SELECT submitted_at FROM tasks WHERE id = ?", (out.task_id,)
            ).fetchone()
            latency = None
            if row is not None:
                submitted = float(row[0])
                if out.accepted_at is not None:
                    timing["dispatch"] = max(0.0, out.accepted_at - submitted)
                latency = max(0.0, now - submitted)
                timing["latency"] = latency
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO results (task_id, tenant, node, status, result,"
                    " error_kind, error, timing, bytes_read, bytes_returned, accepted_at,"
                    " finished_at, stored_at, latency_s, bytes_uplink)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        out.task_id,
                        out.tenant,
                        out.node,
                        out.status,
                        json.dumps(out.result),
                        out.error_kind,
                        out.error,
                        json.dumps(timing),
                        out.bytes_read,
                        out.bytes_returned,
                        out.accepted_at,
                        out.finished_at if out.finished_at is not None else now,
                        now,
                        latency,
                        out.bytes_uplink,
                    ),
                )
                new = cur.rowcount == 1
                if new:
                    self._db.execute(
                        "UPDATE tasks SET status = ? WHERE id = ?", (out.status, out.task_id)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def result_count(self, task_id: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM results WHERE task_id = ?", (task_id,)
            ).fetchone()
        return int(row[0])

    # --- reading -----------------------------------------------------------------------------
    def get(self, task_id: str, tenant: str | None = None) -> TaskInfo:
        """A task as its tenant sees it.

        Raises:
            TaskNotFound: no such task, or it belongs to another tenant than ``tenant``.
        """
        with self._lock:
            row = self._db.execute(_SELECT + " WHERE t.id = ?", (task_id,)).fetchone()
        if row is None or (tenant is not None and row[1] != tenant):
            raise TaskNotFound(f"no task {task_id!r}", task_id=task_id)
        return _info(row)

    def list(self, tenant: str | None = None, limit: int = 100) -> list[TaskInfo]:
        """Newest first; only ``tenant``'s tasks if given."""
        where, args = ("WHERE t.tenant = ?", (tenant,)) if tenant is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"{_SELECT} {where} ORDER BY t.submitted_at DESC LIMIT ?", (*args, limit)
            ).fetchall()
        return [_info(r) for r in rows]

    def status_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in rows}


def _info(row: tuple[Any, ...]) -> TaskInfo:
    (tid, tenant, node, where, status, placement, submitted_at) = row[:7]
    (r_status, result, error_kind, error, timing, b_read, b_ret, finished_at, latency, up) = row[7:]
    return TaskInfo(
        task_id=tid,
        tenant=tenant,
        node=node,
        where=where,
        status=r_status or status,
        result=json.loads(result) if result is not None else None,
        error_kind=error_kind,
        error=error,
        timing=json.loads(timing) if timing else {},
        bytes_read=b_read,
        bytes_returned=b_ret,
        submitted_at=submitted_at,
        finished_at=finished_at,
        latency_s=latency,
        bytes_uplink=up,
        placement=placement,
    )
