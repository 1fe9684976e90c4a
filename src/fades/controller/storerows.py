"""The rows of ``controller.db``: its schema, the records :class:`ControllerStore` returns
(:class:`TaskRecord`, :class:`PendingTask`, :class:`StoredOutcome`, :class:`FunctionOwner`),
and the migration of a ``tasks_v2`` table of an earlier version.

:mod:`fades.controller.store` re-exports the records; import them from there.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from fades.controller.models import FINAL, Site, Status
from fades.outcome import Outcome

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks_v2 (
    tenant        TEXT NOT NULL,
    id            TEXT NOT NULL,
    wire_id       TEXT NOT NULL UNIQUE,
    node          TEXT NOT NULL,
    location      TEXT NOT NULL CHECK (location IN ('edge', 'cloud', 'device')),
    status        TEXT NOT NULL,
    task          TEXT NOT NULL,
    placement     TEXT NOT NULL,
    digest        TEXT,
    submitted_at  REAL NOT NULL,
    dispatched_at REAL,
    decision      TEXT,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS tasks_v2_by_tenant ON tasks_v2 (tenant, submitted_at);
CREATE INDEX IF NOT EXISTS tasks_v2_by_status ON tasks_v2 (status);
CREATE TABLE IF NOT EXISTS outcomes (
    tenant       TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    stored_at    REAL NOT NULL,
    latency_s    REAL,
    bytes_uplink INTEGER,
    PRIMARY KEY (tenant, task_id)
);
-- a tenant's outcomes in event (rowid) order: a result stream's catch-up walks only them
CREATE INDEX IF NOT EXISTS outcomes_by_tenant_event ON outcomes (tenant);
CREATE TABLE IF NOT EXISTS replica (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    applied_seq INTEGER NOT NULL,
    log_id      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS functions (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    digest     TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
"""

#: most bytes of stored outcomes one task listing returns (the rest: ask with a smaller limit)
LIST_MAX_BYTES = 16 * 1024 * 1024

SELECT = """
SELECT t.tenant, t.id, t.node, t.location, t.status, t.placement, t.submitted_at, t.digest,
       o.outcome, o.latency_s, o.bytes_uplink, t.decision
FROM tasks_v2 t LEFT JOIN outcomes o ON o.tenant = t.tenant AND o.task_id = t.id
"""


@dataclass(slots=True, frozen=True)
class TaskRecord:
    """A task as the controller holds it, and its outcome once it ended."""

    task_id: str
    tenant: str
    node: str
    where: Site
    status: Status
    placement: str
    submitted_at: float
    digest: str | None = None
    outcome: Outcome | None = None
    latency_s: float | None = None
    bytes_uplink: int | None = None
    decision: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL


@dataclass(slots=True, frozen=True)
class PendingTask:
    """A task recorded but not finished: what a restart needs to resume it."""

    tenant: str
    id: str
    wire_id: str
    node: str
    where: Site
    task: dict[str, Any]
    submitted_at: float
    digest: str | None


@dataclass(slots=True, frozen=True)
class StoredOutcome:
    """An outcome as it was stored: its event id (increasing; the result stream's id), the
    outcome with the controller's timing added, and its JSON."""

    event_id: int
    outcome: Outcome
    json: str
    latency_s: float | None


@dataclass(slots=True, frozen=True)
class FunctionOwner:
    """Who owns a function name and which version is current."""

    name: str
    owner: str
    digest: str
    #: the current version's place in the version order (build time in ns)
    created_ns: int


def record_of(row: tuple[Any, ...]) -> TaskRecord:
    (tenant, tid, node, where, status, placement, submitted_at, digest) = row[:8]
    (outcome, latency, uplink, decision) = row[8:]
    return TaskRecord(
        task_id=tid,
        tenant=tenant,
        node=node,
        where=where,
        status=status,
        placement=placement,
        submitted_at=submitted_at,
        digest=digest,
        outcome=Outcome.model_validate_json(outcome) if outcome is not None else None,
        latency_s=latency,
        bytes_uplink=uplink,
        decision=json.loads(decision) if decision else None,
    )


def migrate(db: sqlite3.Connection) -> None:
    """Bring a ``tasks_v2`` table of an earlier version up to date: the ``decision`` column
    and ``device`` as a location (a CHECK cannot be altered: the table is rebuilt)."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks_v2'").fetchone()
    if row is None or "'device'" in row[0]:
        return
    cols = [r[1] for r in db.execute("PRAGMA table_info(tasks_v2)")]
    keep = ", ".join(c for c in cols if c != "decision")
    table = SCHEMA.split("CREATE TABLE IF NOT EXISTS tasks_v2", 1)[1].split(";", 1)[0]
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE tasks_v2 RENAME TO tasks_v2_old")
        db.execute(f"CREATE TABLE tasks_v2 {table}")
        db.execute(f"INSERT INTO tasks_v2 ({keep}) SELECT {keep} FROM tasks_v2_old")
        db.execute("DROP TABLE tasks_v2_old")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
