"""The rows of the controller's pipeline tables (see :mod:`fades.controller.pipestore`, which
re-exports them): the schema, :class:`PipelineRow`, :class:`RunRow`, :class:`Recorded` and the
run statuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

RunStatus = Literal["running", "done", "failed", "dropped", "cancelled"]
#: the statuses a run ends in
RUN_ENDED = ("done", "failed", "dropped", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pipelines (
    name         TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    state        TEXT NOT NULL,
    spec         TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    ends_at      REAL,
    next_run     INTEGER NOT NULL DEFAULT 1,
    reason       TEXT NOT NULL DEFAULT '',
    updated_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pipeline_runs (
    pipeline   TEXT NOT NULL,
    run        TEXT NOT NULL,
    status     TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at   REAL,
    reason     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (pipeline, run)
);
CREATE INDEX IF NOT EXISTS pipeline_runs_by_status ON pipeline_runs (status, started_at);
CREATE TABLE IF NOT EXISTS stage_events (
    pipeline TEXT NOT NULL,
    run      TEXT NOT NULL,
    stage    TEXT NOT NULL,
    instance TEXT NOT NULL,
    status   TEXT NOT NULL,
    node     TEXT NOT NULL,
    at       REAL NOT NULL,
    event    TEXT NOT NULL,
    UNIQUE (pipeline, run, stage, instance, status)
);
CREATE TABLE IF NOT EXISTS finales (
    pipeline    TEXT NOT NULL,
    run         TEXT NOT NULL,
    stage       TEXT NOT NULL,
    instance    TEXT NOT NULL,
    result      TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (pipeline, run, stage, instance)
);
"""


def run_id(number: int) -> str:
    return f"r{number:06d}"


@dataclass(slots=True, frozen=True)
class PipelineRow:
    name: str
    tenant: str
    state: str
    spec: dict[str, Any]
    submitted_at: float
    ends_at: float | None
    next_run: int
    reason: str


@dataclass(slots=True, frozen=True)
class RunRow:
    pipeline: str
    run: str
    status: RunStatus
    started_at: float
    ended_at: float | None
    reason: str
    #: the finales' results (stage or stage/instance -> value), once the run has them
    results: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        took = None if self.ended_at is None else max(0.0, self.ended_at - self.started_at)
        return {
            "pipeline": self.pipeline,
            "run": self.run,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": took,
            "reason": self.reason,
            "results": self.results,
        }


@dataclass(slots=True, frozen=True)
class Recorded:
    """What recording one event changed."""

    #: False: the same event was recorded before (ignored)
    new: bool
    #: the run's status after it (None: no such pipeline)
    run_status: RunStatus | None = None
    #: the run ended with this event
    ended: bool = False
    #: a finale's result was recorded with this event (the first time)
    finale_recorded: bool = False


def pipeline_row(row: tuple[Any, ...]) -> PipelineRow:
    name, tenant, state, spec, submitted_at, ends_at, next_run, reason = row
    return PipelineRow(
        name, tenant, state, json.loads(spec), submitted_at, ends_at, int(next_run), reason
    )


def run_row(row: tuple[Any, ...], results: dict[str, Any] | None = None) -> RunRow:
    pipeline, run, status, started_at, ended_at, reason = row
    return RunRow(pipeline, run, status, started_at, ended_at, reason, results or {})
