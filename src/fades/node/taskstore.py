"""The node's durable record of tasks and results (SQLite, WAL).

A task is written as ``accepted`` before ``submit`` returns, so an accepted task survives a
crash: on restart, ``accepted`` and ``running`` tasks are handed back to the orchestrator,
which reruns them or fails them with a reason. Nothing accepted is silently dropped.

The ``delivered`` column is the node agent's result outbox: a finished or failed task stays
``delivered = 0`` until its result has been acknowledged by the fabric.

A finished record gives the one :class:`~fades.outcome.Outcome` (:meth:`TaskRecord.outcome`):
what the agent publishes and the controller stores.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fades.errors import NodeStorageFull, TaskNotFound
from fades.node.taskrecord import TaskRecord, _loads, record_from_row

__all__ = ["ACTIVE", "SCHEMA", "TaskRecord", "TaskStore", "open_sqlite"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    status        TEXT NOT NULL,            -- accepted | running | done | failed
    task_json     TEXT NOT NULL,
    accepted_at   REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error_kind    TEXT,
    error         TEXT,
    result_json   TEXT,
    timing_json   TEXT,
    bytes_read    INTEGER,
    bytes_returned INTEGER,
    delivered     INTEGER NOT NULL DEFAULT 0, -- result acknowledged by the fabric
    digest        TEXT,                     -- the artifact that ran
    traceback     TEXT,                     -- the function's own, when it raised
    logs          TEXT                      -- the function's bounded stdout/stderr
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status);
CREATE TABLE IF NOT EXISTS invocations (
    task_id     TEXT NOT NULL REFERENCES tasks(id),
    seq         INTEGER NOT NULL,
    at          REAL NOT NULL,
    ok          INTEGER NOT NULL,
    result_json TEXT,
    error       TEXT,
    timing_json TEXT,
    PRIMARY KEY (task_id, seq)
);
"""

#: created after the migration below (an older database lacks the column at first)
OUTBOX_INDEX = (
    "CREATE INDEX IF NOT EXISTS tasks_outbox ON tasks(finished_at) "
    "WHERE delivered = 0 AND status IN ('done', 'failed')"
)

ACTIVE = ("accepted", "running")

#: what SQLite says when a write cannot extend its file (a full disk, a file-size limit)
_FULL = ("disk I/O error", "database or disk is full")

#: columns added after the first release: (name, SQL type), added by :meth:`TaskStore._migrate`
LATER_COLUMNS = (("digest", "TEXT"), ("traceback", "TEXT"), ("logs", "TEXT"))


def open_sqlite(path: Path) -> sqlite3.Connection:
    """An autocommit connection usable from several threads (callers hold a lock), in WAL."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class TaskStore:
    """Tasks, results and persistent-function invocations in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = open_sqlite(self.path)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add the outbox column to a database made before it existed.

        Tasks that ended before the migration count as delivered: no agent was waiting for
        them, so they are not published.
        """
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(tasks)").fetchall()}
        if "delivered" not in cols:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cols = {r[1] for r in self._db.execute("PRAGMA table_info(tasks)").fetchall()}
                if "delivered" not in cols:
                    self._db.execute(
                        "ALTER TABLE tasks ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0"
                    )
                    self._db.execute(
                        "UPDATE tasks SET delivered=1 WHERE status IN ('done', 'failed')"
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._db.execute(OUTBOX_INDEX)
        for name, sqltype in LATER_COLUMNS:
            if name not in cols:
                try:
                    self._db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {sqltype}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write that fails because the file cannot grow raises :class:`NodeStorageFull`."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if str(exc) not in _FULL:
                raise
            raise NodeStorageFull(
                f"the node's task store {self.path} cannot be written: {exc} (is the disk "
                "full, or a file-size limit reached?)"
            ) from exc

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock, self._writing():
            return self._db.execute(sql, args)

    def accept(self, task_id: str, tenant: str, task_json: str) -> None:
        """Record a new task as accepted (durable before this returns)."""
        try:
            self._exec(
                "INSERT INTO tasks(id, tenant, status, task_json, accepted_at) "
                "VALUES (?, ?, 'accepted', ?, ?)",
                (task_id, tenant, task_json, time.time()),
            )
        except sqlite3.IntegrityError:
            from fades.errors import TaskValidationError

            raise TaskValidationError(
                f"a task with id {task_id!r} already exists on this node",
                problems=[("credentials.task_id", "already used")],
                task_id=task_id,
            ) from None

    def accept_many(self, rows: list[tuple[str, str, str]]) -> list[bool]:
        """Record several new tasks ``(id, tenant, task_json)`` as accepted in ONE transaction
        (one commit for a burst; durable before this returns). Returns, per row, True if it
        was recorded, False if a task with that id already exists (that row is skipped)."""
        if not rows:
            return []
        now = time.time()
        out: list[bool] = []
        with self._lock, self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for task_id, tenant, task_json in rows:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO tasks(id, tenant, status, task_json, accepted_at) "
                        "VALUES (?, ?, 'accepted', ?, ?)",
                        (task_id, tenant, task_json, now),
                    )
                    out.append(cur.rowcount == 1)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                    self._db.execute("ROLLBACK")
                raise
        return out

    def claim(self, task_id: str) -> float | None:
        """Mark an ``accepted`` (or interrupted ``running``) task as running, in one statement;
        returns its acceptance time, or None if it is finished or unknown (nothing changed)."""
        # the RETURNING statement is read to its end under the lock: a statement left open
        # keeps its write uncommitted and makes every other thread's commit on this
        # connection fail ("cannot commit transaction - SQL statements in progress")
        with self._lock:
            rows = self._db.execute(
                "UPDATE tasks SET status='running', started_at=?, attempts=attempts+1 "
                "WHERE id=? AND status IN ('accepted', 'running') RETURNING accepted_at",
                (time.time(), task_id),
            ).fetchall()
        return float(rows[0][0]) if rows else None

    def start(self, task_id: str) -> None:
        self._exec(
            "UPDATE tasks SET status='running', started_at=?, attempts=attempts+1 WHERE id=?",
            (time.time(), task_id),
        )

    def finish(
        self,
        task_id: str,
        *,
        result: Any,
        timing: dict[str, float],
        bytes_read: int,
        bytes_returned: int,
        digest: str | None = None,
        logs: str | None = None,
    ) -> None:
        self._exec(
            "UPDATE tasks SET status='done', finished_at=?, result_json=?, timing_json=?, "
            "bytes_read=?, bytes_returned=?, error_kind=NULL, error=NULL, traceback=NULL, "
            "digest=COALESCE(?, digest), logs=?, delivered=0 WHERE id=?",
            (
                time.time(),
                json.dumps(result),
                json.dumps(timing),
                bytes_read,
                bytes_returned,
                digest,
                logs or None,
                task_id,
            ),
        )

    def fail(
        self,
        task_id: str,
        kind: str,
        message: str,
        timing: dict[str, float] | None = None,
        *,
        digest: str | None = None,
        traceback: str | None = None,
        logs: str | None = None,
        bytes_read: int | None = None,
    ) -> None:
        self._exec(
            "UPDATE tasks SET status='failed', finished_at=?, error_kind=?, error=?, "
            "timing_json=COALESCE(?, timing_json), digest=COALESCE(?, digest), traceback=?, "
            "logs=?, bytes_read=COALESCE(?, bytes_read), delivered=0 WHERE id=?",
            (
                time.time(),
                kind,
                message,
                json.dumps(timing) if timing else None,
                digest,
                traceback or None,
                logs or None,
                bytes_read,
                task_id,
            ),
        )

    def record_invocation(
        self,
        task_id: str,
        seq: int,
        *,
        ok: bool,
        result: Any = None,
        error: str | None = None,
        timing: dict[str, float] | None = None,
    ) -> None:
        self._exec(
            "INSERT OR REPLACE INTO invocations VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                task_id,
                seq,
                time.time(),
                int(ok),
                json.dumps(result) if ok else None,
                error,
                json.dumps(timing or {}),
            ),
        )

    def invocations(self, task_id: str) -> list[dict[str, Any]]:
        rows = self._exec(
            "SELECT seq, at, ok, result_json, error, timing_json FROM invocations "
            "WHERE task_id=? ORDER BY seq",
            (task_id,),
        ).fetchall()
        return [
            {
                "seq": r[0],
                "at": r[1],
                "ok": bool(r[2]),
                "result": _loads(r[3]),
                "error": r[4],
                "timing": _loads(r[5]),
            }
            for r in rows
        ]

    def get(self, task_id: str) -> TaskRecord:
        row = self._exec("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(f"no task {task_id!r} on this node", task_id=task_id)
        return self._record(row)

    def active(self) -> list[TaskRecord]:
        """Tasks accepted or running, oldest first (what a restart must resume)."""
        rows = self._exec(
            "SELECT * FROM tasks WHERE status IN ('accepted', 'running') ORDER BY accepted_at"
        ).fetchall()
        return [self._record(r) for r in rows]

    def exists(self, task_id: str) -> bool:
        return self._exec("SELECT 1 FROM tasks WHERE id=?", (task_id,)).fetchone() is not None

    def existing(self, task_ids: list[str]) -> set[str]:
        """Which of ``task_ids`` were ever accepted here (one query for a burst)."""
        found: set[str] = set()
        for i in range(0, len(task_ids), 500):  # under SQLite's bound-parameter limit
            part = task_ids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._exec(f"SELECT id FROM tasks WHERE id IN ({marks})", tuple(part))
            found.update(r[0] for r in rows.fetchall())
        return found

    def get_many(self, task_ids: list[str]) -> list[TaskRecord]:
        """The records of those of ``task_ids`` held here (one query per 500 ids)."""
        out: list[TaskRecord] = []
        for i in range(0, len(task_ids), 500):
            part = task_ids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._exec(f"SELECT * FROM tasks WHERE id IN ({marks})", tuple(part))
            out.extend(self._record(r) for r in rows.fetchall())
        return out

    def undelivered(self, limit: int = 1000) -> list[TaskRecord]:
        """Finished or failed tasks whose result the fabric has not acknowledged, oldest first."""
        rows = self._exec(
            "SELECT * FROM tasks WHERE delivered=0 AND status IN ('done', 'failed') "
            "ORDER BY finished_at LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._record(r) for r in rows]

    def mark_delivered(self, task_id: str) -> None:
        """The task's result was acknowledged by the fabric."""
        self._exec(
            "UPDATE tasks SET delivered=1 WHERE id=? AND status IN ('done', 'failed')",
            (task_id,),
        )

    def mark_delivered_many(self, task_ids: list[str]) -> None:
        """Several results were acknowledged by the fabric: one transaction, one commit."""
        if not task_ids:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE tasks SET delivered=1 WHERE id=? AND status IN ('done', 'failed')",
                    [(t,) for t in task_ids],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def list(self, tenant: str | None = None, limit: int = 100) -> list[TaskRecord]:
        if tenant is None:
            rows = self._exec(
                "SELECT * FROM tasks ORDER BY accepted_at DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._exec(
                "SELECT * FROM tasks WHERE tenant=? ORDER BY accepted_at DESC LIMIT ?",
                (tenant, limit),
            ).fetchall()
        return [self._record(r) for r in rows]

    _record = staticmethod(record_from_row)
