"""Accepted tasks survive restarts and crashes: they are rerun, or failed with a reason."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fades.node.taskstore import TaskStore

MEM = 32

OK = """
def main(data, params):
    return {"n": len(data["t"])}
"""

SLOW = """
import time

def main(data, params):
    end = time.monotonic() + params["seconds"]
    while time.monotonic() < end:
        pass
    return {"n": len(data["t"]), "slept": params["seconds"]}
"""

# Opens the node in its own process, optionally submits a task, then idles until killed.
CHILD = """
import json, sys, time
from fades.node import Node
node = Node(sys.argv[1], capacity=1)
if sys.argv[2] != "-":
    print(node.orchestrator.submit(json.loads(sys.argv[2])), flush=True)
time.sleep(600)
"""


def db_row(home: Path, task_id: str) -> tuple[str, int] | None:
    if not (home / "tasks.db").exists():
        return None
    con = sqlite3.connect(home / "tasks.db", timeout=5)
    try:
        return con.execute("SELECT status, attempts FROM tasks WHERE id=?", (task_id,)).fetchone()
    except sqlite3.OperationalError:  # the child has not created the schema yet
        return None
    finally:
        con.close()


def crash_while_running(
    home: Path, task: dict[str, Any] | None, task_id: str, attempt: int
) -> None:
    """Run a node in a child process until ``task_id`` is running its ``attempt``; SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), json.dumps(task) if task else "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the node process exited early: {proc.stderr.read()}")  # type: ignore[union-attr]
            if db_row(home, task_id) == ("running", attempt):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"task {task_id} never reached running attempt {attempt}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert db_row(home, task_id) == ("running", attempt)  # the crash left it mid-run


def test_an_accepted_task_completes_after_a_clean_restart(
    prepare_home: Callable[..., Path],
    open_node: Callable[..., Any],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    home = prepare_home(functions={"ok": OK})
    first = open_node(home, autostart=False)
    tid = first.orchestrator.submit(make_task("ok", memory_mib=MEM))
    first.close()
    assert db_row(home, tid) == ("accepted", 0)
    second = open_node(home)
    rec = second.orchestrator.wait(tid, timeout=60)
    assert rec.status == "done"
    assert rec.result["n"] > 0
    assert rec.attempts == 1


def test_queued_tasks_stay_accepted_when_the_node_closes_and_resume_in_order(
    prepare_home: Callable[..., Path],
    open_node: Callable[..., Any],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    home = prepare_home(functions={"ok": OK})
    first = open_node(home, autostart=False)
    ids = [first.orchestrator.submit(make_task("ok", memory_mib=MEM)) for _ in range(3)]
    first.close()
    second = open_node(home, capacity=1)
    recs = [second.orchestrator.wait(i, timeout=60) for i in ids]
    assert [r.status for r in recs] == ["done"] * 3
    starts = [r.started_at for r in recs]
    assert starts == sorted(starts)  # resumed oldest first


def test_a_task_running_when_the_node_was_killed_is_rerun_on_restart(
    prepare_home: Callable[..., Path],
    open_node: Callable[..., Any],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    home = prepare_home(functions={"slow": SLOW})
    task = make_task(
        "slow", task_id="crash-1", memory_mib=MEM, time_budget_ms=60_000, params={"seconds": 1.5}
    )
    crash_while_running(home, task, "crash-1", attempt=1)
    node = open_node(home)
    rec = node.orchestrator.wait("crash-1", timeout=60)
    assert rec.status == "done", rec
    assert rec.result["slept"] == 1.5
    assert rec.attempts == 2


def test_a_task_interrupted_by_crashes_max_attempts_times_is_failed_with_the_reason(
    prepare_home: Callable[..., Path],
    open_node: Callable[..., Any],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    home = prepare_home(functions={"slow": SLOW})
    task = make_task(
        "slow", task_id="crash-2", memory_mib=MEM, time_budget_ms=60_000, params={"seconds": 30}
    )
    crash_while_running(home, task, "crash-2", attempt=1)
    crash_while_running(home, None, "crash-2", attempt=2)  # resumed, then killed again
    node = open_node(home)  # default max_attempts=2
    rec = node.orchestrator.get("crash-2")  # failed during recovery, before any worker ran
    assert rec.status == "failed"
    assert rec.error_kind == "OrchestratorError"
    assert "the node stopped while this task was running (2 of 2 attempts)" in (rec.error or "")
    assert "not retried" in (rec.error or "")
    assert rec.attempts == 2
    assert node.orchestrator.load["queued"] == 0


def test_a_stored_task_that_no_longer_parses_is_failed_on_restart(
    prepare_home: Callable[..., Path], open_node: Callable[..., Any]
) -> None:
    home = prepare_home()
    store = TaskStore(home / "tasks.db")
    store.accept("legacy", "facilities", json.dumps({"credentials": {"tenant": "facilities"}}))
    store.close()
    node = open_node(home)
    rec = node.orchestrator.get("legacy")
    assert rec.status == "failed"
    assert rec.error_kind == "TaskValidationError"
    assert "cannot resume after restart" in (rec.error or "")
