"""Stateful persistent tasks on a real node (SQLite folder, worker processes, real wasmtime):
state survives a node restart and continues the sequence; an uncapturable global fails the
task naming it; a fenced instance stops; a tampered checkpoint is refused; the cost of a
checkpoint is reported."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

COUNTER = """
count = 0
history = []

def main(data, params):
    global count
    count += 1
    history.append(count)
    return {"count": count, "kept": len(history)}
"""

LAMBDA = """
pick = lambda x: x
def main(data, params):
    return 1
"""


def task(artifact: str, task_id: str, **function: Any) -> dict[str, Any]:
    return {
        "credentials": {"tenant": "facilities", "task_id": task_id},
        "inputs": {"x": 1},
        "function": {
            "artifact": artifact,
            "memory_mib": 32,
            "mode": "persistent",
            "period_s": 0.05,
            **function,
        },
    }


@pytest.fixture
def home(prepare_home: Callable[..., Path]) -> Path:
    return prepare_home(functions={"counter": COUNTER, "lam": LAMBDA}, readings=False)


def wait_for(cond: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_state_survives_a_node_restart(home: Path, open_node: Any) -> None:
    node = open_node(home)
    orc = node.orchestrator
    orc.submit(task("counter", "ctr1", state={"checkpoint": "every"}))
    wait_for(lambda: len(orc.invocations("ctr1")) >= 3)
    node.close()  # the task stays running and resumes on the next start
    before = len(TaskRecordView(home).invocations())
    node = open_node(home)
    orc = node.orchestrator
    wait_for(lambda: len(orc.invocations("ctr1")) >= before + 3)
    invs = orc.invocations("ctr1")
    for inv in invs:  # the state followed the sequence across the restart: no reset to 1
        assert inv["ok"], inv
        assert inv["result"]["count"] == inv["seq"] + 1, invs
        assert inv["result"]["kept"] == inv["seq"] + 1
    orc.cancel("ctr1")
    wait_for(lambda: orc.get("ctr1").done)
    assert orc.checkpoints.load("ctr1", digest="x" * 64) is None  # released with the task


def test_without_state_the_counter_restarts(home: Path, open_node: Any) -> None:
    # the control: the same function, not stateful, forgets across a restart
    node = open_node(home)
    node.orchestrator.submit(task("counter", "plain1"))
    wait_for(lambda: len(node.orchestrator.invocations("plain1")) >= 2)
    node.close()
    node = open_node(home)
    orc = node.orchestrator
    n = len(TaskRecordView(home, "plain1").invocations())
    wait_for(lambda: len(orc.invocations("plain1")) > n)
    assert orc.invocations("plain1")[n]["result"]["count"] == 1


def test_a_lambda_global_fails_the_task_naming_it(home: Path, open_node: Any) -> None:
    orc = open_node(home).orchestrator
    orc.submit(task("lam", "lam1", state={}))
    rec = orc.wait("lam1", timeout=90)
    assert rec.status == "failed" and rec.error_kind == "StateNotCapturable", rec
    assert "global 'pick' holds a lambda" in (rec.error or "")
    orc.submit(task("counter", "ok1", state={}, invocations=2))  # the node keeps serving
    rec = orc.wait("ok1", timeout=90)
    assert rec.status == "done" and rec.result["last"]["count"] == 2


@pytest.mark.parametrize("policy", ["every", {"every_n": 100_000}])
def test_a_fenced_instance_stops(home: Path, open_node: Any, policy: Any) -> None:
    # whatever its policy (even one that would not save for hours), a stale instance stops
    # before it runs more than the invocation in flight when the task moved
    orc = open_node(home).orchestrator
    orc.submit(task("counter", "fen1", state={"checkpoint": policy}))
    wait_for(lambda: len(orc.invocations("fen1")) >= 2)
    orc.checkpoints.claim("fen1", "node-b")  # the task moved to node-b
    moved_at = len(orc.invocations("fen1"))
    rec = orc.wait("fen1", timeout=90)
    assert rec.status == "failed" and rec.error_kind == "Fenced", rec
    assert "task moved: another instance holds it (node node-b)" in (rec.error or "")
    assert len(orc.invocations("fen1")) <= moved_at + 1


def test_a_tampered_checkpoint_is_refused_on_restart(home: Path, open_node: Any) -> None:
    node = open_node(home)
    node.orchestrator.submit(task("counter", "tam1", state={}))
    wait_for(lambda: len(node.orchestrator.invocations("tam1")) >= 2)
    node.close()
    db = sqlite3.connect(home / "state.db")
    (rec,) = db.execute("SELECT record FROM state WHERE task_id='tam1'").fetchone()
    forged = bytearray(rec)
    forged[-40] ^= 0x01
    db.execute("UPDATE state SET record=? WHERE task_id='tam1'", (bytes(forged),))
    db.commit()
    db.close()
    orc = open_node(home).orchestrator
    wait_for(lambda: orc.get("tam1").done)
    got = orc.get("tam1")
    assert got.error_kind == "CheckpointRejected" and "integrity check failed" in (got.error or "")


def test_checkpoint_cost_is_reported(home: Path, open_node: Any) -> None:
    orc = open_node(home).orchestrator
    orc.submit(task("counter", "cost1", state={"checkpoint": {"every_n": 2}}, invocations=6))
    rec = orc.wait("cost1", timeout=120)
    assert rec.status == "done", rec
    ck = rec.result["checkpoints"]
    # after the first invocation (always), then every 2nd: seq 1, 3, 5, and the final 6
    assert ck["saved"] == 4 and ck["state_bytes"] <= 1024, ck
    timed = [i for i in orc.invocations("cost1") if "checkpoint" in i["timing"]]
    assert [i["seq"] for i in timed] == [0, 2, 4]
    print(f"checkpoint cost: mean {ck['mean_ms']} ms, counter state {ck['state_bytes']} bytes")


class TaskRecordView:
    """Read a closed node's invocations straight from tasks.db."""

    def __init__(self, home: Path, task_id: str = "ctr1") -> None:
        self.home, self.task_id = home, task_id

    def invocations(self) -> list[Any]:
        db = sqlite3.connect(self.home / "tasks.db")
        try:
            return db.execute(
                "SELECT seq FROM invocations WHERE task_id=?", (self.task_id,)
            ).fetchall()
        finally:
            db.close()
