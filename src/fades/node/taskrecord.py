"""One task's record as the node's task store keeps it (:class:`TaskRecord`), and how a row
of ``tasks.db`` becomes one: what the orchestrator, the node agent's outbox and the CLI read.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from fades.outcome import Outcome

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(slots=True)
class TaskRecord:
    """What the node knows about one task."""

    id: str
    tenant: str
    status: str
    task: dict[str, Any]
    accepted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    error_kind: str | None = None
    error: str | None = None
    result: Any = None
    timing: dict[str, float] = field(default_factory=dict)
    bytes_read: int | None = None
    bytes_returned: int | None = None
    delivered: bool = False
    digest: str | None = None
    traceback: str | None = None
    logs: str | None = None

    @property
    def done(self) -> bool:
        return self.status in ("done", "failed")

    def outcome(self, node: str) -> Outcome:
        """The task's :class:`Outcome` as run on ``node`` (a finished or failed record).

        The digest is the one recorded at run time, else the task's pinned
        ``function.artifact`` when that is a digest.
        """
        if not self.done:
            raise ValueError(f"task {self.id} is {self.status}, not finished")
        digest = self.digest
        fn = self.task.get("function")
        ref = fn.get("artifact") if isinstance(fn, dict) else None
        if digest is None and isinstance(ref, str) and _DIGEST.match(ref):
            digest = ref
        return Outcome(
            task_id=self.id,
            tenant=self.tenant,
            node=node,
            status="done" if self.status == "done" else "failed",
            result=self.result,
            error_kind=self.error_kind,
            error=self.error,
            traceback=self.traceback,
            logs=self.logs,
            timing=self.timing,
            bytes_read=self.bytes_read or 0,
            bytes_returned=self.bytes_returned or 0,
            digest=digest,
            attempts=self.attempts,
            accepted_at=self.accepted_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "status": self.status,
            "attempts": self.attempts,
            "error_kind": self.error_kind,
            "error": self.error,
            "result": self.result,
            "timing": self.timing,
            "bytes_read": self.bytes_read,
            "bytes_returned": self.bytes_returned,
            "accepted_at": self.accepted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "digest": self.digest,
            "traceback": self.traceback,
            "logs": self.logs,
        }


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def record_from_row(row: sqlite3.Row) -> TaskRecord:
    """A TaskRecord from a ``SELECT * FROM tasks`` row."""
    keys = row.keys()
    return TaskRecord(
        id=row[0],
        tenant=row[1],
        status=row[2],
        task=json.loads(row[3]),
        accepted_at=row[4],
        started_at=row[5],
        finished_at=row[6],
        attempts=row[7],
        error_kind=row[8],
        error=row[9],
        result=_loads(row[10]),
        timing=_loads(row[11]) or {},
        bytes_read=row[12],
        bytes_returned=row[13],
        delivered=bool(row["delivered"]) if "delivered" in keys else False,
        digest=row["digest"] if "digest" in keys else None,
        traceback=row["traceback"] if "traceback" in keys else None,
        logs=row["logs"] if "logs" in keys else None,
    )
