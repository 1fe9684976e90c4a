"""Counting at the end of a chaos run (:mod:`fades.testbed.chaos`), from the outside: tasks
through the HTTP API, pipeline runs through the CLI and the API, stateful counters through
the API and each node's ``tasks.db`` (read-only).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fades.errors import FadesError

if TYPE_CHECKING:
    from fades.testbed.chaos import ChaosRun

PIPELINE = "chaos"
FINALE = "fin"


def settle_tasks(self: ChaosRun, deadline: float) -> None:
    pending = set(self.accepted) - set(self.counters)
    infos: dict[str, dict[str, Any]] = {}
    while pending and time.monotonic() < deadline:
        for tid in sorted(pending):
            info = self.call("get", tid)
            if info["status"] in ("done", "failed"):
                infos[tid] = info
                pending.discard(tid)
        if pending:
            time.sleep(1.0)
    start_wall = time.time() - self.now()
    done_at = sorted(i["submitted_at"] + (i["latency_s"] or 0) - start_wall for i in infos.values())
    lat = sorted(float(i["latency_s"] or 0) for i in infos.values())
    self.report.tasks = {
        "submitted": len(self.accepted) + len(self.refused) - len(self.counters),
        "accepted": len(self.accepted) - len(self.counters),
        "refused": len(self.refused),
        "refusals": self.refusals,
        "refused_reasons": sorted(set(self.refused.values()))[:10],
        "done": sum(1 for i in infos.values() if i["status"] == "done"),
        "failed": sum(1 for i in infos.values() if i["status"] == "failed"),
        "failed_reasons": sorted(
            {f"{i['error_kind']}: {i['error']}" for i in infos.values() if i["error"]}
        )[:10],
        "lost": len(pending),
        "lost_ids": sorted(pending)[:50],
        "lost_states": _lost_states(self, sorted(pending)[:50]),
        "late": sum(1 for x in lat if x > self.cfg.late_after_s),
        "late_after_s": self.cfg.late_after_s,
        "latency_p50_s": _pct(lat, 50),
        "latency_p99_s": _pct(lat, 99),
        "latency_max_s": lat[-1] if lat else None,
    }
    ephemeral = [t for k, t in self.accepted.items() if k not in self.counters]
    self.report.timeline = {"accepted": sorted(ephemeral), "completed": done_at}


def _lost_states(self: ChaosRun, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Where each lost task stopped, as every controller sees it (a controller whose copy
    of the log lags would show a task unfinished that another shows done)."""
    from fades.client import FadesClient

    out: dict[str, dict[str, Any]] = {}
    for tid in ids:
        for url in self.urls:
            try:
                with FadesClient(url, self.cluster.token, timeout=10.0) as client:
                    info = client.get(tid)
                view = {k: info.get(k) for k in ("status", "node", "where", "submitted_at")}
            except FadesError as exc:
                view = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            out.setdefault(tid, {})[url] = view
    return out


def _cli_runs(self: ChaosRun) -> list[dict[str, Any]]:
    env = dict(os.environ, FADES_CONTROLLER=",".join(self.urls), FADES_TOKEN=self.cluster.token)
    proc = subprocess.run(
        [sys.executable, "-m", "fades", "pipeline", "runs", PIPELINE, "--json",
         "--limit", str(self.cfg.pipeline_runs + 100)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise FadesError(f"fades pipeline runs failed: {proc.stderr.strip()[-500:]}")
    runs: list[dict[str, Any]] = json.loads(proc.stdout)
    return runs


def settle_runs(self: ChaosRun, deadline: float) -> None:
    first_finale: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    while True:
        runs = self.call("pipeline_runs", PIPELINE, self.cfg.pipeline_runs + 100)
        for r in runs:
            if r["status"] == "done" and r["run"] not in first_finale:
                first_finale[r["run"]] = r.get("results")
        if all(r["status"] != "running" for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    runs = _cli_runs(self)
    by_id = {r["run"]: r for r in runs}
    dup: list[str] = []
    for r in runs:
        line = self.call("pipeline_run", PIPELINE, r["run"])
        ends = [s for s in line["stages"] if s["stage"] == FINALE and s["status"] == "done"]
        changed = r["run"] in first_finale and first_finale[r["run"]] != r.get("results")
        if len(ends) > 1 or changed:
            dup.append(r["run"])
    statuses = [r["status"] for r in runs]
    unfinished: dict[str, Any] = {}  # what a lost run waits on, to find the cause
    for r in runs:
        if r["status"] == "running":
            line = self.call("pipeline_run", PIPELINE, r["run"])
            unfinished[r["run"]] = [
                f"{s['stage']}/{s['instance']} {s['status']} on {s['node']}" for s in line["stages"]
            ]
    missing = [r for r in self.runs_started if r not in by_id]
    if unfinished or missing:
        status = self.call("pipeline", PIPELINE)
        unfinished["_plan"] = status.get("plan")
        unfinished["_queues"] = status.get("queues")
    self.report.pipeline = {
        "started": len(self.runs_started),
        "recorded": len(runs),
        "done": statuses.count("done"),
        "failed": statuses.count("failed"),
        "other": sum(1 for s in statuses if s not in ("done", "failed", "running")),
        "lost": statuses.count("running") + len(missing),
        "lost_runs": unfinished,
        "missing_runs": missing,
        "duplicated_finales": len(dup),
        "duplicated_runs": dup[:20],
        "reasons": sorted({r["reason"] for r in runs if r.get("reason")})[:10],
    }


def settle_stateful(self: ChaosRun, deadline: float) -> None:
    for tid in self.counters:
        info = self.call("wait", tid, timeout=max(1.0, deadline - time.monotonic()))
        seen: dict[int, list[int]] = {}
        nodes = []
        for name in self.cluster.names:
            rows = _invocations(self.cluster.node_home(name) / "tasks.db", tid)
            if rows:
                nodes.append(name)
            for seq, count in rows:
                seen.setdefault(seq, []).append(count)
        last = (info.get("result") or {}).get("last") or {}
        self.report.stateful.append(
            {
                "task_id": tid,
                "status": info["status"],
                "invocations": (info.get("result") or {}).get("invocations"),
                "last_count": last.get("count"),
                "nodes": nodes,
                # a step applied twice shows as a count above its sequence number + 1
                "applied_twice": sum(1 for s, cs in seen.items() if any(c != s + 1 for c in cs)),
                "redone": sum(len(cs) - 1 for cs in seen.values()),
                "gaps": sorted(set(range(max(seen, default=-1) + 1)) - set(seen))[:20],
                "error": info.get("error"),
            }
        )


def _invocations(db: Path, task_id: str) -> list[tuple[int, int]]:
    """``(seq, count)`` of the node's successful invocations of a counter (read-only)."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            "SELECT seq, result_json FROM invocations WHERE task_id = ? AND ok = 1", (task_id,)
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
    return [(int(s), int(json.loads(r)["count"])) for s, r in rows]


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]
