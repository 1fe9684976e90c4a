"""The controller's record of pipelines, their runs, stage events and finales (SQLite, in
``controller.db`` beside the tasks).

* ``pipelines``: one row per pipeline name: its tenant, state (active, cancelled,
  finished), the deployed spec, and the next run number. The number survives a resubmit, so
  run ids (``r000001`` ...) are never reused: a node finds a stage execution by
  ``(pipeline, run, stage, instance)`` and must never mistake an old run for a new one;
* ``pipeline_runs``: each run, ``running`` until it ends ``done``, ``failed``, ``dropped``
  or ``cancelled``, with the reason. The first end wins;
* ``stage_events``: every :class:`~fades.pipelines.protocol.StageEvent`, once per
  ``(pipeline, run, stage, instance, status)`` (events are delivered at least once);
* ``finales``: a finale's result, once per ``(pipeline, run, stage, instance)``.

The tables' schema and the rows returned are in :mod:`fades.controller.piperows`.
Blocking methods: the controller calls them through :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fades.controller.piperows import (
    RUN_ENDED,
    SCHEMA,
    PipelineRow,
    Recorded,
    RunRow,
    RunStatus,
    pipeline_row,
    run_id,
    run_row,
)
from fades.node.taskstore import open_sqlite
from fades.pipelines.protocol import StageEvent

__all__ = [
    "RUN_ENDED",
    "PipelineRow",
    "PipelineStore",
    "Recorded",
    "RunRow",
    "RunStatus",
    "run_id",
]


class PipelineStore:
    """Pipelines, runs, events and finales in one SQLite file (safe from several threads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = open_sqlite(self.path)
        self._db.executescript(SCHEMA)
        self._nested = False

    # the write funnel: inside a transaction of the controller log's applier (which shares
    # this connection, fades.controller.logops), a write is a savepoint of that transaction
    def _begin(self) -> str:
        self._nested = self._db.in_transaction
        return "SAVEPOINT pipestore" if self._nested else "BEGIN IMMEDIATE"

    def _end(self, *, ok: bool) -> str:
        if self._nested:
            return "RELEASE pipestore" if ok else "ROLLBACK TO pipestore"
        return "COMMIT" if ok else "ROLLBACK"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- pipelines ---------------------------------------------------------------------------
    def get(self, name: str) -> PipelineRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, tenant, state, spec, submitted_at, ends_at, next_run, reason"
                " FROM pipelines WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else pipeline_row(row)

    def pipelines(self, tenant: str | None = None) -> list[PipelineRow]:
        where, args = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                "SELECT name, tenant, state, spec, submitted_at, ends_at, next_run, reason"
                f" FROM pipelines {where} ORDER BY submitted_at DESC",
                args,
            ).fetchall()
        return [pipeline_row(r) for r in rows]

    def put(
        self,
        name: str,
        tenant: str,
        spec: dict[str, Any],
        submitted_at: float,
        ends_at: float | None,
        at: float | None = None,
    ) -> None:
        """Record a (re)submitted pipeline as active; its run numbering carries on."""
        with self._lock:
            self._db.execute(
                "INSERT INTO pipelines (name, tenant, state, spec, submitted_at, ends_at,"
                " updated_at) VALUES (?, ?, 'active', ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET tenant = excluded.tenant, state = 'active', spec = excluded.spec,"
                " submitted_at = excluded.submitted_at, ends_at = excluded.ends_at,"
                " reason = '', updated_at = excluded.updated_at",
                (name, tenant, json.dumps(spec), submitted_at, ends_at, at or time.time()),
            )

    def set_state(self, name: str, state: str, reason: str = "", at: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE pipelines SET state = ?, reason = ?, updated_at = ? WHERE name = ?",
                (state, reason, at or time.time(), name),
            )

    # --- runs --------------------------------------------------------------------------------
    def new_runs(self, name: str, count: int, started_at: float) -> list[str]:
        """Allocate ``count`` run ids for ``name`` and record them as running."""
        with self._lock:
            self._db.execute(self._begin())
            try:
                row = self._db.execute(
                    "SELECT next_run FROM pipelines WHERE name = ?", (name,)
                ).fetchone()
                if row is None:
                    raise KeyError(name)
                first = int(row[0])
                ids = [run_id(first + i) for i in range(count)]
                self._db.execute(
                    "UPDATE pipelines SET next_run = ? WHERE name = ?", (first + count, name)
                )
                self._db.executemany(
                    "INSERT OR IGNORE INTO pipeline_runs (pipeline, run, status, started_at)"
                    " VALUES (?, ?, 'running', ?)",
                    [(name, r, started_at) for r in ids],
                )
                self._db.execute(self._end(ok=True))
            except BaseException:
                self._db.execute(self._end(ok=False))
                raise
        return ids

    def end_run(
        self, name: str, run: str, status: RunStatus, reason: str = "", at: float | None = None
    ) -> bool:
        """End a running run (the first end wins); False if it had ended already."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE pipeline_runs SET status = ?, reason = ?, ended_at = ?"
                " WHERE pipeline = ? AND run = ? AND status = 'running'",
                (status, reason, at or time.time(), name, run),
            )
        return cur.rowcount == 1

    def running(self, name: str | None = None) -> list[RunRow]:
        where, args = ("AND pipeline = ?", (name,)) if name is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                "SELECT pipeline, run, status, started_at, ended_at, reason FROM pipeline_runs"
                f" WHERE status = 'running' {where} ORDER BY started_at",
                args,
            ).fetchall()
        return [run_row(r) for r in rows]

    def silent_runs(self, name: str, since: float) -> list[RunRow]:
        """Running runs of ``name`` started after ``since`` that no event was recorded for."""
        with self._lock:
            rows = self._db.execute(
                "SELECT r.pipeline, r.run, r.status, r.started_at, r.ended_at, r.reason"
                " FROM pipeline_runs r WHERE r.pipeline = ? AND r.status = 'running'"
                " AND r.started_at > ? AND NOT EXISTS (SELECT 1 FROM stage_events e"
                " WHERE e.pipeline = r.pipeline AND e.run = r.run) ORDER BY r.run",
                (name, since),
            ).fetchall()
        return [run_row(r) for r in rows]

    def runs(self, name: str, limit: int = 100) -> list[RunRow]:
        """A pipeline's runs, newest first, with their finales' results."""
        with self._lock:
            rows = self._db.execute(
                "SELECT pipeline, run, status, started_at, ended_at, reason FROM pipeline_runs"
                " WHERE pipeline = ? ORDER BY run DESC LIMIT ?",
                (name, limit),
            ).fetchall()
            out = []
            for r in rows:
                out.append(run_row(r, self._results(name, r[1])))
        return out

    def run(self, name: str, run: str) -> RunRow | None:
        with self._lock:
            r = self._db.execute(
                "SELECT pipeline, run, status, started_at, ended_at, reason FROM pipeline_runs"
                " WHERE pipeline = ? AND run = ?",
                (name, run),
            ).fetchone()
            return None if r is None else run_row(r, self._results(name, run))

    def counts(self, name: str) -> dict[str, int]:
        """Runs of ``name`` by status."""
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM pipeline_runs WHERE pipeline = ? GROUP BY status",
                (name,),
            ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def _results(self, name: str, run: str) -> dict[str, Any]:
        rows = self._db.execute(
            "SELECT stage, instance, result FROM finales WHERE pipeline = ? AND run = ?",
            (name, run),
        ).fetchall()
        return {(s if i == "_" else f"{s}/{i}"): json.loads(v) for s, i, v in rows}

    # --- events ------------------------------------------------------------------------------
    def record(self, ev: StageEvent, finales: dict[str, set[str]]) -> Recorded:
        """Store one event (once) and move its run on.

        ``finales`` maps each finale stage of the current plan to its instances: the run is
        done when every one of them is done or skipped. A failed stage fails the run, a
        dropped bundle drops it. A run the controller did not start (an automatic one) is
        recorded from its first event.
        """
        return self.record_many([(ev, finales)])[0]

    def record_many(self, items: list[tuple[StageEvent, dict[str, set[str]]]]) -> list[Recorded]:
        """:meth:`record` for several events in one transaction (in order)."""
        with self._lock:
            self._db.execute(self._begin())
            try:
                out = [self._record(ev, finales) for ev, finales in items]
                self._db.execute(self._end(ok=True))
            except BaseException:
                self._db.execute(self._end(ok=False))
                raise
        return out

    def _record(self, ev: StageEvent, finales: dict[str, set[str]]) -> Recorded:
        db = self._db
        try:
            db.execute(
                "INSERT INTO stage_events (pipeline, run, stage, instance, status, node, at,"
                " event) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ev.pipeline,
                    ev.run,
                    ev.stage,
                    ev.instance,
                    ev.status,
                    ev.node,
                    ev.at,
                    ev.model_dump_json(),
                ),
            )
        except sqlite3.IntegrityError:
            return Recorded(new=False)
        started = ev.run_started_at or ev.at
        db.execute(
            "INSERT OR IGNORE INTO pipeline_runs (pipeline, run, status, started_at)"
            " VALUES (?, ?, 'running', ?)",
            (ev.pipeline, ev.run, started),
        )
        finale_new = False
        if ev.status == "done" and ev.stage in finales:
            cur = db.execute(
                "INSERT OR IGNORE INTO finales (pipeline, run, stage, instance, result,"
                " recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (ev.pipeline, ev.run, ev.stage, ev.instance, json.dumps(ev.result), time.time()),
            )
            finale_new = cur.rowcount == 1
        end: tuple[RunStatus, str] | None = None
        where = ev.stage if ev.instance == "_" else f"{ev.stage}/{ev.instance}"
        if ev.status == "failed":
            kind = f"{ev.error_kind}: " if ev.error_kind else ""
            end = ("failed", f"stage {where} failed on {ev.node}: {kind}{ev.error or ''}")
        elif ev.status == "dropped":
            end = ("dropped", f"stage {where}: bundle dropped: {ev.error or 'queue full'}")
        elif (
            ev.status in ("done", "skipped") and ev.stage in finales and self._finished(ev, finales)
        ):
            end = ("done", "")
        ended = False
        if end is not None:
            cur = db.execute(
                "UPDATE pipeline_runs SET status = ?, reason = ?, ended_at = ?"
                " WHERE pipeline = ? AND run = ? AND status = 'running'",
                (end[0], end[1][:2000], time.time(), ev.pipeline, ev.run),
            )
            ended = cur.rowcount == 1
        row = db.execute(
            "SELECT status FROM pipeline_runs WHERE pipeline = ? AND run = ?",
            (ev.pipeline, ev.run),
        ).fetchone()
        return Recorded(True, row[0] if row else None, ended, finale_new)

    def _finished(self, ev: StageEvent, finales: dict[str, set[str]]) -> bool:
        rows = self._db.execute(
            "SELECT stage, instance FROM stage_events WHERE pipeline = ? AND run = ?"
            " AND status IN ('done', 'skipped')",
            (ev.pipeline, ev.run),
        ).fetchall()
        seen = {(str(s), str(i)) for s, i in rows}
        return all((stage, inst) in seen for stage, insts in finales.items() for inst in insts)

    def timeline(self, name: str, run: str) -> list[StageEvent]:
        """A run's events in the order they happened."""
        with self._lock:
            rows = self._db.execute(
                "SELECT event FROM stage_events WHERE pipeline = ? AND run = ? ORDER BY at, rowid",
                (name, run),
            ).fetchall()
        return [StageEvent.model_validate_json(r[0]) for r in rows]

    def finale_count(self, name: str, run: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM finales WHERE pipeline = ? AND run = ?", (name, run)
            ).fetchone()
        return int(row[0])
