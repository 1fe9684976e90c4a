"""The orchestrator: intake checks, scheduling policies, concurrency, persistent functions and
the timing breakdown, on real nodes (SQLite files, wasmtime) in tmp_path."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.guests import COUNTER

from fades.errors import AccessDenied, ArtifactError, OrchestratorError, TaskValidationError
from fades.node.orchestrator import TIMING_KEYS
from fades.node.taskstore import TaskRecord

MEM = 32

OK = """
def main(data, params):
    return {"n": sum(len(ds) for ds in data.values()), "tag": params.get("tag")}
"""

SLEEPY = """
import time

def main(data, params):
    end = time.monotonic() + params.get("seconds", 0.5)
    while time.monotonic() < end:
        pass
    return params.get("tag")
"""


MINMAX = """
def main(data, params):
    out = {}
    for ds in data.values():
        st = ds.labels["sensor_type"]
        for code, v in zip(ds.codes("sensor_type"), ds.values):
            lo, hi = out.get(st[code], (v, v))
            out[st[code]] = (min(lo, v), max(hi, v))
    return out
"""

POLICY = {
    "tenants": {
        "facilities": {"locations": "*", "sensor_types": "*"},
        "visitor": {"locations": ["room1"], "sensor_types": ["temperature"]},
    }
}

MakeNode = Callable[..., Any]
MakeTask = Callable[..., dict[str, Any]]


def wait_all(orc: Any, ids: list[str], timeout: float = 60) -> list[TaskRecord]:
    recs = [orc.wait(i, timeout=timeout) for i in ids]
    assert all(r.done for r in recs), [(r.id, r.status) for r in recs]
    return recs


# --- intake -----------------------------------------------------------------------------------
def test_a_tenant_reading_beyond_its_policy_is_refused_and_nothing_is_recorded(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    node = make_node(functions={"ok": OK}, policy=POLICY)
    orc = node.orchestrator
    bad = make_task(
        "ok",
        tenant="visitor",
        memory_mib=MEM,
        data=[{"name": "co2", "select": {"location": "room1", "sensor_type": "co2"}}],
    )
    with pytest.raises(AccessDenied) as err:
        orc.submit(bad)
    assert "tenant 'visitor' may not read sensor type(s) co2" in str(err.value)
    assert orc.store.list() == []
    assert orc.load == {"running": 0, "queued": 0}


def test_a_tenant_leaving_the_location_open_is_refused_when_it_may_not_read_all(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    node = make_node(functions={"ok": OK}, policy=POLICY)
    task = make_task(
        "ok",
        tenant="visitor",
        memory_mib=MEM,
        data=[{"name": "t", "select": {"sensor_type": "temperature"}}],
    )
    with pytest.raises(AccessDenied, match="visitor"):
        node.orchestrator.submit(task)
    assert node.orchestrator.store.list() == []


def test_an_unknown_tenant_is_refused(make_node: MakeNode, make_task: MakeTask) -> None:
    node = make_node(functions={"ok": OK}, policy=POLICY)
    with pytest.raises(AccessDenied, match="stranger"):
        node.orchestrator.submit(make_task("ok", tenant="stranger", memory_mib=MEM))
    assert node.orchestrator.store.list() == []


def test_a_tenant_within_its_policy_is_served(make_node: MakeNode, make_task: MakeTask) -> None:
    node = make_node(functions={"ok": OK}, policy=POLICY)
    rec = node.orchestrator.run(make_task("ok", tenant="visitor", memory_mib=MEM), timeout=60)
    assert rec.status == "done"
    assert rec.result["n"] > 0


def test_an_unknown_function_is_refused_at_submit(make_node: MakeNode, make_task: MakeTask) -> None:
    node = make_node(functions={"ok": OK}, autostart=False)
    with pytest.raises(ArtifactError, match=r"no function named 'nope' on this node \(known: ok\)"):
        node.orchestrator.submit(make_task("nope"))
    with pytest.raises(ArtifactError, match="not on this node"):
        node.orchestrator.submit(make_task("sha256:" + "0" * 64))
    assert node.orchestrator.store.list() == []


def test_a_malformed_task_is_refused_at_submit(make_node: MakeNode, make_task: MakeTask) -> None:
    node = make_node(functions={"ok": OK}, autostart=False)
    bad = make_task("ok", memory_mib=MEM)
    bad["credentials"]["priority"] = 42
    with pytest.raises(TaskValidationError, match=r"credentials\.priority"):
        node.orchestrator.submit(bad)
    with pytest.raises(TaskValidationError, match="not valid YAML"):
        node.orchestrator.submit("credentials: [")
    assert node.orchestrator.store.list() == []


def test_a_task_id_cannot_be_reused(make_node: MakeNode, make_task: MakeTask) -> None:
    node = make_node(functions={"ok": OK}, autostart=False)
    node.orchestrator.submit(make_task("ok", memory_mib=MEM, task_id="once"))
    with pytest.raises(TaskValidationError, match="'once' already exists"):
        node.orchestrator.submit(make_task("ok", memory_mib=MEM, task_id="once"))


def test_an_accepted_task_is_recorded_before_submit_returns(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    node = make_node(functions={"ok": OK}, autostart=False)
    tid = node.orchestrator.submit(make_task("ok", memory_mib=MEM))
    rec = node.orchestrator.get(tid)
    assert (rec.status, rec.attempts, rec.started_at) == ("accepted", 0, None)
    assert node.orchestrator.load == {"running": 0, "queued": 1}


def test_a_task_whose_deadline_passed_in_the_queue_is_failed_unrun(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    node = make_node(functions={"ok": OK}, autostart=False)
    task = make_task("ok", memory_mib=MEM)
    task["credentials"]["deadline"] = (datetime.now(UTC) + timedelta(seconds=0.2)).isoformat()
    tid = node.orchestrator.submit(task)
    time.sleep(0.3)
    node.orchestrator.start()
    rec = node.orchestrator.wait(tid, timeout=30)
    assert (rec.status, rec.error_kind) == ("failed", "DeadlineMissed")
    assert rec.started_at is None
    assert "passed before the task could start" in (rec.error or "")


def test_a_closed_node_accepts_no_new_tasks(make_node: MakeNode, make_task: MakeTask) -> None:
    node = make_node(functions={"ok": OK}, autostart=False)
    node.orchestrator.close()
    with pytest.raises(OrchestratorError, match="shutting down"):
        node.orchestrator.submit(make_task("ok", memory_mib=MEM))


def test_an_unknown_scheduling_policy_is_refused(make_node: MakeNode) -> None:
    with pytest.raises(OrchestratorError, match="unknown scheduling policy 'lifo'"):
        make_node(scheduling="lifo")


# --- scheduling ---------------------------------------------------------------------------------
def _order(make_node: MakeNode, make_task: MakeTask, policy: str) -> list[str]:
    """Queue four tasks on a stopped one-worker node, start it, return the run order by tags."""
    node = make_node(functions={"ok": OK}, capacity=1, scheduling=policy, autostart=False)
    now = datetime.now(UTC)
    specs = [  # tag, priority, deadline (hours from now, None: no deadline)
        ("a", 1, None),
        ("b", 9, 3),
        ("c", 5, 1),
        ("d", 9, 2),
    ]
    ids = []
    for tag, prio, hours in specs:
        t = make_task("ok", memory_mib=MEM, params={"tag": tag}, task_id=f"task-{tag}")
        t["credentials"]["priority"] = prio
        if hours is not None:
            t["credentials"]["deadline"] = (now + timedelta(hours=hours)).isoformat()
        ids.append(node.orchestrator.submit(t))
    node.orchestrator.start()
    recs = wait_all(node.orchestrator, ids)
    assert all(r.status == "done" for r in recs)
    recs.sort(key=lambda r: r.started_at)
    # one worker: each task started after the previous one finished
    for prev, nxt in itertools.pairwise(recs):
        assert prev.finished_at <= nxt.started_at
    return [r.result["tag"] for r in recs]


def test_fifo_runs_tasks_in_arrival_order(make_node: MakeNode, make_task: MakeTask) -> None:
    assert _order(make_node, make_task, "fifo") == ["a", "b", "c", "d"]


def test_priority_runs_the_most_urgent_first_and_ties_in_arrival_order(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    assert _order(make_node, make_task, "priority") == ["b", "d", "c", "a"]


def test_edf_runs_the_earliest_deadline_first_and_no_deadline_last(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    assert _order(make_node, make_task, "edf") == ["c", "d", "b", "a"]


def test_the_scheduling_policy_can_come_from_node_yaml(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    node = make_node(node_yaml={"capacity": 1, "scheduling": "priority"}, autostart=False)
    assert node.orchestrator.capacity == 1
    assert node.orchestrator.queue.policy.name == "priority"


# --- concurrency --------------------------------------------------------------------------------
def _two_sleepers(make_node: MakeNode, make_task: MakeTask, capacity: int) -> list[TaskRecord]:
    node = make_node(functions={"sleepy": SLEEPY}, capacity=capacity, autostart=False)
    ids = [
        node.orchestrator.submit(
            make_task("sleepy", memory_mib=MEM, time_budget_ms=10_000, params={"seconds": 0.5})
        )
        for _ in range(2)
    ]
    node.orchestrator.start()
    recs = wait_all(node.orchestrator, ids)
    assert all(r.status == "done" for r in recs), recs
    return recs


def test_two_workers_run_two_tasks_at_the_same_time(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    a, b = _two_sleepers(make_node, make_task, capacity=2)
    # the run intervals overlap
    assert a.started_at < b.finished_at
    assert b.started_at < a.finished_at


def test_one_worker_runs_tasks_one_after_the_other(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    a, b = sorted(_two_sleepers(make_node, make_task, capacity=1), key=lambda r: r.started_at)
    assert a.finished_at <= b.started_at


# --- persistent functions -----------------------------------------------------------------------
def test_a_persistent_function_is_invoked_periodically_in_one_live_instance(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    node = make_node(functions={"counter": COUNTER})
    orc = node.orchestrator
    task = make_task("counter", memory_mib=MEM, mode="persistent", period_s=0.1, invocations=3)
    rec = orc.run(task, timeout=60)
    assert rec.status == "done", rec
    invs = orc.invocations(rec.id)
    assert [i["seq"] for i in invs] == [0, 1, 2]
    assert all(i["ok"] for i in invs)
    # module globals survive between invocations: the instance stayed alive
    assert [i["result"]["count"] for i in invs] == [1, 2, 3]
    assert all(i["result"]["rows"] > 0 for i in invs)
    assert {"retrieval", "compute", "total"} <= set(invs[0]["timing"])
    assert invs[0]["at"] < invs[1]["at"] < invs[2]["at"]
    assert rec.result == {
        "invocations": 3,
        "failed": 0,
        "last": {"count": 3, "rows": invs[2]["result"]["rows"]},
    }


def test_a_persistent_function_can_be_cancelled(make_node: MakeNode, make_task: MakeTask) -> None:
    node = make_node(functions={"counter": COUNTER})
    orc = node.orchestrator
    tid = orc.submit(make_task("counter", memory_mib=MEM, mode="persistent", period_s=0.05))
    deadline = time.monotonic() + 30
    while len(orc.invocations(tid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    orc.cancel(tid)
    rec = orc.wait(tid, timeout=30)
    assert rec.status == "failed" and rec.error_kind == "TaskCancelled", rec
    n = len(orc.invocations(tid))
    assert n >= 2 and f"cancelled after {n} invocation(s)" in (rec.error or "")


def test_a_failing_persistent_invocation_is_recorded_and_the_next_gets_a_fresh_instance(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    flaky = """
    COUNT = 0

    def main(data, params):
        global COUNT
        COUNT += 1
        if COUNT == 2:
            raise RuntimeError("second call fails")
        return COUNT
    """
    node = make_node(functions={"flaky": flaky})
    orc = node.orchestrator
    rec = orc.run(
        make_task("flaky", memory_mib=MEM, mode="persistent", period_s=0.05, invocations=3),
        timeout=60,
    )
    invs = orc.invocations(rec.id)
    assert [i["ok"] for i in invs] == [True, False, True]
    assert "FunctionCrashed" in invs[1]["error"] and "second call fails" in invs[1]["error"]
    assert invs[2]["result"] == 1  # a trapped instance is replaced by a fresh one
    assert rec.result["failed"] == 1


# --- results and timing -------------------------------------------------------------------------
def test_a_result_comes_with_a_timing_breakdown_and_bytes_in_and_out(
    make_node: MakeNode, make_task: MakeTask
) -> None:
    node = make_node(functions={"minmax": MINMAX})
    task = make_task(
        "minmax",
        memory_mib=64,
        data=[
            {"name": "r1", "select": {"location": "room1"}},
            {"name": "r2", "select": {"location": "room2", "sensor_type": ["co2", "light"]}},
        ],
    )
    rec = node.orchestrator.run(task, timeout=60)
    assert rec.status == "done", rec
    assert set(rec.result) == {"temperature", "humidity", "light", "audio", "proximity", "co2",
                               "occupancy"}  # fmt: skip
    assert set(TIMING_KEYS) <= set(rec.timing)
    for k in ("retrieval", "transfer", "start", "compute", "result", "total"):
        assert rec.timing[k] >= 0, k
    parts = sum(rec.timing[k] for k in ("retrieval", "transfer", "start", "compute", "result"))
    assert rec.timing["total"] >= rec.timing["compute"]
    assert rec.timing["total"] >= 0.5 * parts  # the parts are measured inside the total
    # an aggregation sends back much less than it read
    assert rec.bytes_read is not None and rec.bytes_returned is not None
    assert rec.bytes_read > 10 * rec.bytes_returned > 0
    assert rec.started_at is not None and rec.finished_at is not None
    assert rec.accepted_at <= rec.started_at <= rec.finished_at
    assert rec.attempts == 1


def test_a_core_module_task_runs_through_the_node(make_node: MakeNode, make_task: MakeTask) -> None:
    from pathlib import Path

    wat = (Path(__file__).resolve().parents[1] / "examples/functions/mean_core.wat").read_text()
    node = make_node(core={"mean_core": wat})
    rec = node.orchestrator.run(make_task("mean_core", memory_mib=16), timeout=60)
    assert rec.status == "done"
    assert rec.result["count"] > 0
    assert 10 < rec.result["mean"] < 35  # indoor temperatures


def test_finish_callbacks_see_the_final_record(make_node: MakeNode, make_task: MakeTask) -> None:
    node = make_node(functions={"ok": OK}, autostart=False)
    seen: list[TaskRecord] = []
    node.orchestrator.on_finish.append(seen.append)
    node.orchestrator.start()
    rec = node.orchestrator.run(make_task("ok", memory_mib=MEM), timeout=60)
    # run() returns once the record says done; the worker calls back just after that
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.id for r in seen] == [rec.id]
    assert seen[0].status == "done"
