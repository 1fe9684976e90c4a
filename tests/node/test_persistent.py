"""Persistent tasks are bounded and cancellable, and a task started by a one-shot run is never
revived by a later, unrelated run on the same folder. Also: an empty selection fails with
NoData unless the data operation allows it.

Real node folders (SQLite, wasmtime) in tmp_path; one-shot runs are real subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.guests import COUNTER

from fades.errors import TaskNotFound
from fades.node.taskstore import TaskStore

COUNT = """
def main(data, params):
    return {name: len(ds) for name, ds in data.items()}
"""

MEM = 32
SRC = str(Path(__file__).resolve().parents[2] / "src")


def task(
    artifact: str = "counter",
    *,
    task_id: str | None = None,
    data: list[dict[str, Any]] | None = None,
    **function: Any,
) -> dict[str, Any]:
    creds: dict[str, Any] = {"tenant": "facilities"}
    if task_id:
        creds["task_id"] = task_id
    return {
        "credentials": creds,
        "data": data or [{"name": "t", "select": {"location": "room1", "last": 5}}],
        "function": {"artifact": artifact, "memory_mib": MEM, **function},
    }


def endless(task_id: str | None = None, period_s: float = 0.05) -> dict[str, Any]:
    return task(task_id=task_id, mode="persistent", period_s=period_s)


@pytest.fixture
def home(prepare_home: Callable[..., Path]) -> Path:
    return prepare_home(functions={"counter": COUNTER, "count": COUNT})


def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# --- bounds ----------------------------------------------------------------------------------
def test_a_persistent_task_stops_at_its_max_duration(home: Path, open_node: Any) -> None:
    orc = open_node(home).orchestrator
    t0 = time.monotonic()
    rec = orc.run(task(mode="persistent", period_s=0.05, max_duration_s=1.0), timeout=60)
    assert rec.status == "done", rec
    assert "max_duration_s=1 s reached" in rec.result["stopped"]
    assert rec.result["invocations"] == len(orc.invocations(rec.id)) >= 1
    assert time.monotonic() - t0 < 30


def test_a_persistent_task_without_bounds_stops_at_the_node_limit(
    home: Path, open_node: Any
) -> None:
    (home / "limits.yaml").write_text(yaml.safe_dump({"max_persistent_seconds": 1}))
    orc = open_node(home).orchestrator
    assert orc.limits.max_persistent_seconds == 1
    # the task asks for longer than the node allows: the node's limit wins
    rec = orc.run(task(mode="persistent", period_s=0.05, max_duration_s=600), timeout=60)
    assert rec.status == "done", rec
    assert "max_persistent_seconds=1 s reached" in rec.result["stopped"]
    good = orc.run(task("count"), timeout=60)
    assert good.status == "done" and good.result == {"t": 5}


def test_max_duration_applies_only_to_persistent_tasks(home: Path, open_node: Any) -> None:
    from fades.errors import TaskValidationError

    orc = open_node(home).orchestrator
    with pytest.raises(TaskValidationError, match="max_duration_s"):
        orc.submit(task("count", max_duration_s=5))
    with pytest.raises(TaskValidationError, match="max_duration_s"):
        orc.submit(task(mode="persistent", period_s=1, max_duration_s=-1))


# --- cancel ----------------------------------------------------------------------------------
def test_cancel_wakes_a_persistent_task_waiting_for_a_long_period(
    home: Path, open_node: Any
) -> None:
    orc = open_node(home).orchestrator
    tid = orc.submit(endless(period_s=3600))
    wait_for(lambda: len(orc.invocations(tid)) == 1)
    t0 = time.monotonic()
    orc.cancel(tid)
    rec = orc.wait(tid, timeout=30)
    assert rec.status == "failed" and rec.error_kind == "TaskCancelled", rec
    assert "cancelled after 1 invocation(s)" in (rec.error or "")
    assert time.monotonic() - t0 < 10  # not after the hour-long period
    assert orc.run(task("count"), timeout=60).status == "done"


def test_cancel_of_a_queued_task_fails_it_before_it_starts(home: Path, open_node: Any) -> None:
    node = open_node(home, autostart=False)
    orc = node.orchestrator
    tid = orc.submit(endless())
    orc.cancel(tid)
    rec = orc.get(tid)
    assert rec.status == "failed" and rec.error_kind == "TaskCancelled"
    assert "before it started" in (rec.error or "")
    orc.start()
    assert orc.run(task("count"), timeout=60).status == "done"
    assert orc.invocations(tid) == []


def test_a_one_shot_run_cancels_its_persistent_task_when_the_wait_ends(
    home: Path, open_node: Any
) -> None:
    orc = open_node(home).orchestrator
    rec = orc.run(endless(), timeout=1.0, one_shot=True)
    assert rec.status == "failed" and rec.error_kind == "TaskCancelled", rec
    assert "one-shot run" in (rec.error or "")
    assert len(orc.invocations(rec.id)) >= 1


# --- one-shot runs in real processes ---------------------------------------------------------
DRIVER = """
import json, sys
from fades.node import Node
with Node(sys.argv[1]) as node:
    rec = node.orchestrator.run(json.loads(sys.argv[2]), timeout=float(sys.argv[3]),
                                one_shot=True)
    print(json.dumps(rec.to_dict()), flush=True)
"""


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="200", FADES_HOME=str(home))
    env.pop("FORCE_COLOR", None)
    return env


def _invocations(home: Path, task_id: str) -> int:
    """Invocations recorded so far (0 while the task is not yet accepted)."""
    if not (home / "tasks.db").exists():
        return 0
    try:
        return _record(home, task_id)[1]
    except TaskNotFound:
        return 0


def _record(home: Path, task_id: str) -> tuple[Any, int]:
    store = TaskStore(home / "tasks.db")
    try:
        return store.get(task_id), len(store.invocations(task_id))
    finally:
        store.close()


def _cli_run_other(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(task("count")))
    out = subprocess.run(
        [sys.executable, "-m", "fades", "task", "run", str(other), "--json"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"] == {"t": 5}


def test_a_one_shot_process_that_times_out_leaves_nothing_running(
    home: Path, tmp_path: Path
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, str(home), json.dumps(endless("forever-1")), "2"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["error_kind"] == "TaskCancelled"
    rec, n = _record(home, "forever-1")
    assert rec.status == "failed" and rec.error_kind == "TaskCancelled" and n >= 1
    _cli_run_other(home, tmp_path)  # an unrelated run on the folder does not revive it
    rec2, n2 = _record(home, "forever-1")
    assert (rec2.status, rec2.error, n2) == (rec.status, rec.error, n)


def test_a_killed_one_shot_process_is_not_revived_by_the_next_run(
    home: Path, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(home), json.dumps(endless("forever-2")), "600"],
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _invocations(home, "forever-2") >= 2, 120)
    except BaseException:
        proc.kill()
        raise
    os.kill(proc.pid, signal.SIGKILL)  # like a crash: no cleanup runs
    proc.wait(30)
    rec, n = _record(home, "forever-2")
    assert rec.status == "running"
    _cli_run_other(home, tmp_path)
    rec2, n2 = _record(home, "forever-2")
    assert rec2.status == "failed" and rec2.error_kind == "TaskCancelled", rec2
    assert "one-shot run" in (rec2.error or "")
    assert n2 == n  # not invoked again


def test_cli_task_run_timeout_of_an_endless_persistent_task_is_not_revived(
    home: Path, tmp_path: Path
) -> None:
    f = tmp_path / "endless.yaml"
    f.write_text(yaml.safe_dump(endless("forever-cli")))
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "fades", "task", "run", str(f), "--timeout", "3", "--json"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert time.monotonic() - t0 < 120
    assert out.returncode == 1
    _, n = _record(home, "forever-cli")
    _cli_run_other(home, tmp_path)
    rec, n2 = _record(home, "forever-cli")
    assert rec.status == "failed" and rec.error_kind == "TaskCancelled", rec
    assert n2 == n


# --- empty selections ------------------------------------------------------------------------
def test_an_empty_selection_fails_with_no_data_naming_the_operation(
    home: Path, open_node: Any
) -> None:
    orc = open_node(home).orchestrator
    data = [
        {"name": "t", "select": {"location": "room1", "last": 5}},
        {"name": "ghost", "select": {"location": "nowhere"}},
    ]
    rec = orc.run(task("count", data=data), timeout=60)
    assert rec.status == "failed" and rec.error_kind == "NoData", rec
    assert "ghost" in (rec.error or "") and "allow_empty" in (rec.error or "")
    assert "t," not in (rec.error or "")
    data[1]["allow_empty"] = True
    ok = orc.run(task("count", data=data), timeout=60)
    assert ok.status == "done" and ok.result == {"t": 5, "ghost": 0}, ok
    assert orc.run(task("count"), timeout=60).status == "done"


def test_close_cancels_every_persistent_task_when_asked_and_twice_is_harmless(
    home: Path, open_node: Any
) -> None:
    node = open_node(home)
    orc = node.orchestrator
    tid = orc.submit(endless())
    wait_for(lambda: len(orc.invocations(tid)) >= 1)
    orc.close(cancel_persistent=True)
    orc.close()
    rec, _ = _record(home, tid)
    assert rec.status == "failed" and rec.error_kind == "TaskCancelled", rec
    assert "the node was closed" in (rec.error or "")


def test_max_persistent_seconds_is_set_by_the_environment_and_checked() -> None:
    from fades.errors import OrchestratorError
    from fades.node.limits import NodeLimits

    assert NodeLimits().max_persistent_seconds == 3600
    env = {"FADES_LIMIT_MAX_PERSISTENT_SECONDS": "90"}
    assert NodeLimits.load(env=env).max_persistent_seconds == 90
    for bad in ("0", "-5", "nan", str(31 * 86400)):
        with pytest.raises(OrchestratorError, match="max_persistent_seconds"):
            NodeLimits.load(env={"FADES_LIMIT_MAX_PERSISTENT_SECONDS": bad})


def test_an_empty_selection_in_a_persistent_task_is_a_failed_invocation(
    home: Path, open_node: Any
) -> None:
    orc = open_node(home).orchestrator
    data = [{"name": "t", "select": {"location": "nowhere"}}]
    rec = orc.run(task(data=data, mode="persistent", period_s=0.05, invocations=2), timeout=60)
    assert rec.status == "done" and rec.result["failed"] == 2, rec
    assert all(i["error"].startswith("NoData:") for i in orc.invocations(rec.id))


def test_a_second_run_on_the_folder_leaves_a_live_one_shot_run_alone(
    home: Path, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(home), json.dumps(endless("forever-3")), "600"],
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _invocations(home, "forever-3") >= 1, 120)
        _cli_run_other(home, tmp_path)  # opens the folder while the first run goes on
        rec, n = _record(home, "forever-3")
        assert rec.status == "running", rec
        wait_for(lambda: _invocations(home, "forever-3") > n)  # and it still runs
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the run cancels its task on the way out
        proc.wait(180)
    rec, _ = _record(home, "forever-3")
    assert rec.status == "failed" and rec.error_kind == "TaskCancelled", rec


def test_another_process_on_the_folder_can_cancel_a_running_persistent_task(
    home: Path, open_node: Any
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(home), json.dumps(endless("forever-4", 3600)), "600"],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for(lambda: _invocations(home, "forever-4") >= 1, 120)
        other = open_node(home, autostart=False)  # what `fades task cancel` would open
        other.orchestrator.cancel("forever-4", "stopped by the operator")
        other.close()
        out, _ = proc.communicate(timeout=60)  # the running node ends it, its run returns
    finally:
        proc.kill()
    rec = json.loads(out)
    assert rec["status"] == "failed" and rec["error_kind"] == "TaskCancelled", rec
    assert "stopped by the operator" in rec["error"]
    assert _record(home, "forever-4")[1] == 1  # not waiting out its one-hour period
