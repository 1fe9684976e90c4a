"""The controller's durable state: ``controller.db`` (SQLite).

* ``tasks``: every accepted task, keyed by ``(tenant, id)`` (one tenant's ids say nothing
  about another's), where it was placed and why (``decision``: the placer's explanation as
  JSON; a task placed on its ``device`` is stored ``local``), the artifact digest pinned at
  submit, the ``wire_id`` it carries on the fabric (unique across tenants), and whether it
  was handed to the fabric yet (``accepted`` -> ``dispatched`` -> ``done``/``failed``);
* ``outcomes``: the first :class:`~fades.outcome.Outcome` per task. Later copies (outcomes
  are delivered at least once) are ignored, so an outcome is stored exactly once;
* ``functions``: who owns each function name (the first tenant to publish it);
* ``device_audit``: actuator commands (:mod:`fades.controller.audit`).

The schema and the records returned live in :mod:`fades.controller.storerows`.

A task is recorded before it is dispatched, so a restarted controller re-publishes what it
had accepted but not yet handed over, and re-runs cloud tasks that had not finished.

The methods are blocking; the controller calls them off its event loop, mostly through
:class:`~fades.controller.commits.GroupCommitter`, which runs many of them in one transaction
(:meth:`ControllerStore.group`): one commit per burst of submits and outcomes, not one each.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import Any

from fades.controller.audit import DeviceAudit
from fades.controller.models import Site, Where
from fades.controller.storerows import (
    LIST_MAX_BYTES,
    SCHEMA,
    SELECT,
    FunctionOwner,
    PendingTask,
    StoredOutcome,
    TaskRecord,
    migrate,
    record_of,
)
from fades.errors import DuplicateTask, TaskNotFound
from fades.node.taskstore import open_sqlite
from fades.outcome import Outcome

__all__ = [
    "LIST_MAX_BYTES",
    "ControllerStore",
    "FunctionOwner",
    "PendingTask",
    "StoredOutcome",
    "TaskRecord",
]


#: how long a write waits for another connection's write lock (sqlite3's default, 5 s); the
#: event loop's own commits never wait (:meth:`ControllerStore.group_now`)
BUSY_TIMEOUT_MS = 5000
#: a task was handed to its node: ``accepted`` becomes ``dispatched``; the time is kept even
#: when its outcome was stored first (a fast node can beat the mark)
_MARK = (
    "UPDATE tasks_v2 SET dispatched_at = ?,"
    " status = CASE status WHEN 'accepted' THEN 'dispatched' ELSE status END"
    " WHERE tenant = ? AND id = ? AND (dispatched_at IS NULL OR status = 'accepted')"
)


class ControllerStore(DeviceAudit):
    """Tasks, outcomes and function owners in one SQLite file (safe from several threads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # re-entrant: group() holds it while the write methods it runs take it again
        self._lock = threading.RLock()
        self._db = open_sqlite(self.path)
        migrate(self._db)
        self._db.executescript(SCHEMA)

    def group(
        self, ops: Sequence[Callable[[], Any]], applied: tuple[int, str] | None = None
    ) -> list[tuple[bool, Any]]:
        """Run ``ops`` (calls of this store's methods) in ONE transaction, each in its own
        savepoint: ``(True, result)`` or ``(False, exception)`` per op; an op that raises is
        undone alone. Raises only if the commit itself fails (then nothing is stored).

        ``applied``: ``(sequence, log id)`` of the controller log's last record these ops
        come from, stored in the same transaction (see :mod:`fades.controller.replica`)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            return self._in_group(ops, applied)

    def group_now(self, ops: Sequence[Callable[[], Any]]) -> list[tuple[bool, Any]] | None:
        """:meth:`group` if the database can be written at once; None (nothing run) if
        another connection holds its write lock (the pipelines' store shares the file):
        an event loop calling this never waits on SQLite's busy handler."""
        with self._lock:
            self._db.execute("PRAGMA busy_timeout = 0")
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return None
                raise
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            return self._in_group(ops, None)

    def _in_group(
        self, ops: Sequence[Callable[[], Any]], applied: tuple[int, str] | None
    ) -> list[tuple[bool, Any]]:
        """(lock held, transaction begun) the body of :meth:`group`."""
        out: list[tuple[bool, Any]] = []
        try:
            if applied is not None:
                self._db.execute(
                    "INSERT INTO replica (id, applied_seq, log_id) VALUES (1, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET applied_seq = excluded.applied_seq,"
                    " log_id = excluded.log_id",
                    applied,
                )
            for op in ops:
                self._db.execute("SAVEPOINT fades_op")
                try:
                    out.append((True, op()))
                except Exception as exc:
                    self._db.execute("ROLLBACK TO fades_op")
                    out.append((False, exc))
                self._db.execute("RELEASE fades_op")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def checkpoints_by_caller(self) -> None:
        """Commits no longer copy the write-ahead log into the database file (SQLite's
        automatic checkpoint, which waits for the disk): the caller runs :meth:`checkpoint`."""
        with self._lock:
            self._db.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """Copy what the write-ahead log holds into the database file (waits for the disk;
        never for readers)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def log_position(self) -> tuple[int, str | None]:
        """``(sequence, log id)`` of the last controller-log record applied (0, None: none)."""
        with self._lock:
            row = self._db.execute("SELECT applied_seq, log_id FROM replica").fetchone()
        return (0, None) if row is None else (int(row[0]), str(row[1]))

    # --- tasks -------------------------------------------------------------------------------
    def add_task(
        self,
        task_id: str,
        *,
        tenant: str,
        node: str,
        where: Site,
        task: dict[str, Any],
        placement: str,
        submitted_at: float,
        digest: str | None = None,
        decision: dict[str, Any] | None = None,
        suffix: str | None = None,
        task_text: str | None = None,
    ) -> str:
        """Record an accepted task; returns its wire id (the task id unless another tenant
        already used that id, then the id with ``suffix``, default random). A task placed on its
        device (``where='device'``) is recorded as ``local``: it is over for the cluster.
        ``task_text``: ``task`` as JSON, when the caller has it already.

        Raises:
            DuplicateTask: this tenant recorded a task with this id before.
        """
        with self._lock:
            wire_id = task_id
            taken = self._db.execute("SELECT 1 FROM tasks_v2 WHERE wire_id = ?", (task_id,))
            if taken.fetchone() is not None:
                wire_id = f"{task_id[:47]}.{suffix or uuid.uuid4().hex[:16]}"
            try:
                self._db.execute(
                    "INSERT INTO tasks_v2 (tenant, id, wire_id, node, location, status, task,"
                    " placement, digest, submitted_at, decision)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        tenant,
                        task_id,
                        wire_id,
                        node,
                        where,
                        "local" if where == "device" else "accepted",
                        json.dumps(task) if task_text is None else task_text,
                        placement,
                        digest,
                        submitted_at,
                        None if decision is None else json.dumps(decision),
                    ),
                )
            except sqlite3.IntegrityError:
                raise DuplicateTask(
                    f"task id {task_id!r} was already submitted; task ids must be unique",
                    task_id=task_id,
                ) from None
        return wire_id

    def exists(self, tenant: str, task_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM tasks_v2 WHERE tenant = ? AND id = ?", (tenant, task_id)
            ).fetchone()
        return row is not None

    def existing(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of ``(tenant, task id)`` already recorded (a query per tenant and 500 ids)."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, task_id in dict.fromkeys(keys):
            by_tenant.setdefault(tenant, []).append(task_id)
        found: set[tuple[str, str]] = set()
        with self._lock:
            for tenant, ids in by_tenant.items():
                for i in range(0, len(ids), 500):
                    part = ids[i : i + 500]
                    rows = self._db.execute(
                        "SELECT id FROM tasks_v2 WHERE tenant = ? AND id IN "
                        f"({','.join('?' * len(part))})",
                        [tenant, *part],
                    ).fetchall()
                    found.update((tenant, str(r[0])) for r in rows)
        return found

    def by_wire_id(self, wire_id: str) -> tuple[str, str] | None:
        """``(tenant, task id)`` of the task carried on the fabric as ``wire_id``."""
        with self._lock:
            row = self._db.execute(
                "SELECT tenant, id FROM tasks_v2 WHERE wire_id = ?", (wire_id,)
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def wire_id(self, tenant: str, task_id: str) -> str | None:
        """The id the task carries on the fabric (and on its node), None if unknown."""
        with self._lock:
            row = self._db.execute(
                "SELECT wire_id FROM tasks_v2 WHERE tenant = ? AND id = ?", (tenant, task_id)
            ).fetchone()
        return None if row is None else str(row[0])

    def mark_dispatched(self, tenant: str, task_id: str, at: float | None = None) -> None:
        with self._lock:
            self._db.execute(_MARK, (time.time() if at is None else at, tenant, task_id))

    def mark_dispatched_many(self, keys: Sequence[tuple[str, str]], at: float) -> None:
        """:meth:`mark_dispatched` for each ``(tenant, task id)`` of ``keys``, in one statement."""
        with self._lock:
            self._db.executemany(_MARK, [(at, tenant, task_id) for tenant, task_id in keys])

    def set_node(self, tenant: str, task_id: str, node: str, why: str) -> None:
        """The task runs on ``node`` now (a migration), for reason ``why``."""
        with self._lock:
            self._db.execute(
                "UPDATE tasks_v2 SET node = ?, placement = ? WHERE tenant = ? AND id = ?",
                (node, why[:500], tenant, task_id),
            )

    def pending(self, where: Where, skip: Container[tuple[str, str]] = ()) -> list[PendingTask]:
        """Unfinished tasks: edge ones not yet dispatched, or cloud ones not yet done.

        ``skip``: ``(tenant, task id)`` of tasks not wanted (not even parsed; the dispatcher
        skips those its submits are publishing right now)."""
        status = ("accepted",) if where == "edge" else ("accepted", "dispatched")
        marks = ",".join("?" * len(status))
        with self._lock:
            rows = self._db.execute(
                f"SELECT tenant, id, wire_id, node, task, submitted_at, digest FROM tasks_v2 "
                f"WHERE location = ? AND status IN ({marks}) ORDER BY submitted_at",
                (where, *status),
            ).fetchall()
        return [
            PendingTask(r[0], r[1], r[2], r[3], where, json.loads(r[4]), r[5], r[6])
            for r in rows
            if (r[0], r[1]) not in skip
        ]

    # --- outcomes ----------------------------------------------------------------------------
    def add_outcome(
        self,
        out: Outcome,
        *,
        bytes_uplink: int | None = None,
        stored_at: float | None = None,
        task_id: str | None = None,
        submitted_at: float | None = None,
    ) -> StoredOutcome | None:
        """Store the first outcome of ``(out.tenant, out.task_id)``; None for a duplicate.

        The timing breakdown gains ``dispatch`` (submit -> the node accepted it) and
        ``latency`` (submit -> outcome stored) when the task was submitted here.
        ``task_id``: the task's id when ``out`` names it by another (its wire id);
        ``submitted_at``: when it was submitted, if the caller read it already.
        """
        now = time.time() if stored_at is None else stored_at
        update: dict[str, Any] = {} if task_id is None else {"task_id": task_id}
        task_id = out.task_id if task_id is None else task_id
        with self._lock:
            row = (
                (submitted_at,)
                if submitted_at is not None
                else self._db.execute(
                    "SELECT submitted_at FROM tasks_v2 WHERE tenant = ? AND id = ?",
                    (out.tenant, task_id),
                ).fetchone()
            )
            latency = None
            if row is not None:
                submitted = float(row[0])
                timing = dict(out.timing)
                if out.accepted_at is not None:
                    timing["dispatch"] = max(0.0, out.accepted_at - submitted)
                latency = max(0.0, now - submitted)
                timing["latency"] = latency
                update["timing"] = timing
            if update:  # one copy for both changes
                out = out.model_copy(update=update)
            text = out.model_dump_json()
            nested = self._db.in_transaction  # inside group(): its savepoint covers us
            if not nested:
                self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO outcomes (tenant, task_id, outcome, stored_at,"
                    " latency_s, bytes_uplink) VALUES (?, ?, ?, ?, ?, ?)",
                    (out.tenant, out.task_id, text, now, latency, bytes_uplink),
                )
                stored = None
                if cur.rowcount == 1:
                    stored = StoredOutcome(int(cur.lastrowid or 0), out, text, latency)
                    self._db.execute(
                        "UPDATE tasks_v2 SET status = ? WHERE tenant = ? AND id = ?",
                        (out.status, out.tenant, out.task_id),
                    )
                if not nested:
                    self._db.execute("COMMIT")
            except BaseException:
                if not nested:
                    self._db.execute("ROLLBACK")
                raise
        return stored

    def node_outcome(
        self, out: Outcome, *, bytes_uplink: int | None = None, stored_at: float | None = None
    ) -> StoredOutcome | bool | None:
        """Store an outcome a node published (naming the task by its wire id): False if it
        names no task of its tenant, else as :meth:`add_outcome`."""
        with self._lock:  # (one lookup: the task and when it was submitted)
            row = self._db.execute(
                "SELECT tenant, id, submitted_at FROM tasks_v2 WHERE wire_id = ?", (out.task_id,)
            ).fetchone()
        if row is None or row[0] != out.tenant:
            return False
        return self.add_outcome(
            out,
            bytes_uplink=bytes_uplink,
            stored_at=stored_at,
            task_id=str(row[1]),
            submitted_at=float(row[2]),
        )

    def outcomes_since(
        self,
        tenant: str,
        after: int,
        task_ids: Sequence[str] | None = None,
        limit: int = 500,
        max_bytes: int | None = None,
    ) -> list[tuple[int, str, str]]:
        """``(event id, task id, outcome JSON)`` of ``tenant``'s outcomes stored after event
        ``after`` (only of ``task_ids`` if given), oldest first, at most ``limit``; with
        ``max_bytes``, also no more rows after the one that reaches that much JSON."""
        # the event ids first (from the (tenant) index, in rowid order from ``after``: only
        # this tenant's newer rows, no sort), then the texts one by one up to max_bytes
        sql = "SELECT rowid FROM outcomes WHERE tenant = ? AND rowid > ?"
        args: list[Any] = [tenant, after]
        if task_ids is not None:
            sql += f" AND task_id IN ({','.join('?' * len(task_ids))})"
            args += list(task_ids)
        out: list[tuple[int, str, str]] = []
        size = 0
        with self._lock:
            eids = [r[0] for r in self._db.execute(sql + " ORDER BY rowid LIMIT ?", (*args, limit))]
            for eid in eids:
                r = self._db.execute(
                    "SELECT task_id, outcome FROM outcomes WHERE rowid = ?", (eid,)
                ).fetchone()
                if r is None:  # removed meanwhile by another connection
                    continue
                out.append((int(eid), str(r[0]), str(r[1])))
                size += len(out[-1][2])
                if max_bytes is not None and size >= max_bytes:
                    break
        return out

    def ended_by(self, tenant: str, task_ids: Sequence[str], event_id: int) -> set[str]:
        """Those of ``task_ids`` whose outcome was stored at or before ``event_id``."""
        marks = ",".join("?" * len(task_ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT task_id FROM outcomes WHERE tenant = ? AND rowid <= ?"
                f" AND task_id IN ({marks})",
                (tenant, event_id, *task_ids),
            ).fetchall()
        return {str(r[0]) for r in rows}

    def last_event_id(self) -> int:
        """The newest outcome's event id (0: none yet)."""
        with self._lock:
            row = self._db.execute("SELECT MAX(rowid) FROM outcomes").fetchone()
        return int(row[0] or 0)

    def outcome_count(self, tenant: str, task_id: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM outcomes WHERE tenant = ? AND task_id = ?",
                (tenant, task_id),
            ).fetchone()
        return int(row[0])

    # --- reading -----------------------------------------------------------------------------
    def get(self, task_id: str, tenant: str) -> TaskRecord:
        """One tenant's task.

        Raises:
            TaskNotFound: ``tenant`` has no task ``task_id``.
        """
        with self._lock:
            row = self._db.execute(
                SELECT + " WHERE t.tenant = ? AND t.id = ?", (tenant, task_id)
            ).fetchone()
        if row is None:
            raise TaskNotFound(f"no task {task_id!r}", task_id=task_id)
        return record_of(row)

    def list(
        self, tenant: str | None = None, limit: int = 100, max_bytes: int = LIST_MAX_BYTES
    ) -> list[TaskRecord]:
        """Newest first; only ``tenant``'s tasks if given; at most ``limit`` tasks and, past
        the first, no more than ``max_bytes`` of stored outcomes in all."""
        where, args = ("WHERE t.tenant = ?", (tenant,)) if tenant is not None else ("", ())
        sizes = SELECT.replace("SELECT ", "SELECT length(o.outcome), ", 1)
        out: list[TaskRecord] = []
        total = 0
        with self._lock:
            cur = self._db.execute(
                f"{sizes} {where} ORDER BY t.submitted_at DESC LIMIT ?", (*args, limit)
            )
            for row in cur:
                total += int(row[0] or 0)
                if out and total > max_bytes:
                    break
                out.append(record_of(row[1:]))
        return out

    def status_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM tasks_v2 GROUP BY status"
            ).fetchall()
        return {str(s): int(n) for s, n in rows}

    # --- function names ----------------------------------------------------------------------
    def function_owner(self, name: str) -> FunctionOwner | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, owner, digest, created_ns FROM functions WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else FunctionOwner(row[0], row[1], row[2], int(row[3]))

    def set_function(
        self, name: str, owner: str, digest: str, created_ns: int, at: float | None = None
    ) -> None:
        """Record ``digest`` as the current version of ``name`` (owned by ``owner``)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO functions (name, owner, digest, created_ns, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " digest = excluded.digest, created_ns = excluded.created_ns,"
                " updated_at = excluded.updated_at",
                (name, owner, digest, created_ns, time.time() if at is None else at),
            )
