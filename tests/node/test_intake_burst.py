"""The node agent's intake and outbox work in bursts: many tasks per pull, one commit per
burst of accepts and of delivered marks, results published with bounded concurrency. Real
SQLite, real nats-server, real wasmtime; the kill -9 test runs the node as a subprocess."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.fabric.test_agent import (
    MEM,
    SLOW,
    build,
    fabric,
    open_repo,
    publish_task,
    run,
    running_agent,
    start_node_process,
    task_row,
    wait_for,
)

from fades.fabric import EmbeddedNats
from fades.fabric.subjects import TASKS_STREAM
from fades.fabric.sync import ArtifactSync
from fades.functions.artifact import Artifact
from fades.functions.keys import SigningKey
from fades.node.agent.intake import intake_batch
from fades.node.orchestrator import Orchestrator
from fades.node.taskstore import TaskStore

COUNT = """
def main(data, params):
    return {"n": len(data["t"]), "i": params["i"]}
"""


def _traced(store: TaskStore) -> list[str]:
    stmts: list[str] = []
    store._db.set_trace_callback(stmts.append)
    return stmts


def test_a_burst_of_accepts_and_of_delivered_marks_is_one_commit_each(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks.db")
    store.accept("dup", "t", "{}")
    stmts = _traced(store)
    ok = store.accept_many([(f"t{i}", "t", "{}") for i in range(20)] + [("dup", "t", "{}")])
    assert ok == [True] * 20 + [False]  # the existing id is reported, the others stored
    assert sum(s.startswith("BEGIN") for s in stmts) == 1
    assert sum(s == "COMMIT" for s in stmts) == 1
    assert sum(s.startswith("INSERT") for s in stmts) == 21
    assert store.existing(["t3", "nope", "dup"]) == {"t3", "dup"}
    assert [r.id for r in store.get_many(["t1", "nope", "t2"])] == ["t1", "t2"]
    for i in range(20):
        store.finish(f"t{i}", result=i, timing={}, bytes_read=0, bytes_returned=0)
    stmts.clear()
    store.mark_delivered_many([f"t{i}" for i in range(20)])
    assert sum(s == "COMMIT" for s in stmts) == 1
    assert store.undelivered() == []
    # a second process sees the burst: it was committed
    con = sqlite3.connect(tmp_path / "tasks.db")
    assert con.execute("SELECT COUNT(*) FROM tasks WHERE delivered=1").fetchone()[0] == 20
    con.close()
    store.close()


def test_intake_batch_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FADES_NODE_INTAKE_BATCH", "8")
    assert intake_batch() == 8
    for bad in ("0", "2000", "many"):
        monkeypatch.setenv("FADES_NODE_INTAKE_BATCH", bad)
        with pytest.raises(ValueError, match="FADES_NODE_INTAKE_BATCH"):
            intake_batch()


def test_tasks_queued_before_start_are_taken_in_bursts_and_each_answered_once(
    nats_server: EmbeddedNats,
    prepare_home: Callable[..., Path],
    make_task: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    signing_key: SigningKey,
    runtime_artifact: Artifact,
    tmp_path: Path,
) -> None:
    home = prepare_home("n1", runtime=False)  # the function comes from the repository
    fn = build(tmp_path, "count", COUNT, signing_key)
    n = 40
    bursts: list[int] = []
    real = Orchestrator.submit_many

    def spy(self: Orchestrator, tasks: list[dict[str, Any]]) -> list[str | Exception]:
        bursts.append(len(tasks))
        return real(self, tasks)

    monkeypatch.setattr(Orchestrator, "submit_many", spy)
    fetched: list[str] = []
    real_artifact = ArtifactSync.artifact

    async def artifact(self: ArtifactSync, digest: str, keepalive: Any = None) -> Any:
        fetched.append(digest)
        return await real_artifact(self, digest, keepalive)

    monkeypatch.setattr(ArtifactSync, "artifact", artifact)

    async def main() -> None:
        async with fabric(nats_server) as (_, js, results):
            repo = await open_repo(js)
            await repo.put(runtime_artifact)
            await repo.put(fn)
            ids = []
            for i in range(n):
                task = make_task("count", task_id=f"b{i}", memory_mib=MEM, params={"i": i})
                ids.append(await publish_task(js, "edge1", task, digest=fn.digest))
            # a redelivery of one of them in the same backlog (another message id)
            again = make_task("count", task_id="b0", memory_mib=MEM, params={"i": 0})
            await publish_task(js, "edge1", again, msg_id="b0-again", digest=fn.digest)
            async with running_agent(home, nats_server) as agent:
                assert agent.node is not None
                orc = agent.node.orchestrator
                for tid in ids:
                    res = await results.wait(tid, timeout=120)
                    assert res.status == "done", res
                await wait_for(lambda: agent.counters["duplicates"] == 1, 30, "duplicate acked")
                await wait_for(
                    lambda: orc.store.undelivered() == [], 30, "every result marked delivered"
                )
            assert (await js.stream_info(TASKS_STREAM)).state.messages == 0  # all acked
            await results.poll()
            assert all(results.count(t) == 1 for t in ids)
            assert sum(bursts) == n + 1 and max(bursts, default=0) > 1, bursts
            # the function was fetched and verified once at intake, not once per task
            assert len(fetched) == 1, fetched

    run(main())


def _statuses(home: Path) -> dict[str, int]:
    con = sqlite3.connect(home / "tasks.db", timeout=5)
    try:
        rows = con.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    return {k: v for k, v in rows}


def test_a_node_killed_mid_burst_loses_no_task_and_answers_each_once(
    nats_server: EmbeddedNats,
    prepare_home: Callable[..., Path],
    make_task: Callable[..., dict[str, Any]],
) -> None:
    home = prepare_home("n1", functions={"slow": SLOW})
    n = 24

    async def main() -> None:
        async with fabric(nats_server) as (_, js, results):
            ids = []
            for i in range(n):
                task = make_task("slow", task_id=f"k{i}", memory_mib=MEM, params={"seconds": 0.1})
                ids.append(await publish_task(js, "edge1", task))
            proc = start_node_process(home, nats_server.url)
            try:
                # some finished (their results in flight or out), the rest held, un-run
                await wait_for(lambda: _statuses(home).get("done", 0) >= 3, 120, "3 done")
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            before = _statuses(home)
            assert before.get("accepted", 0) + before.get("running", 0) > 0, before
            proc = start_node_process(home, nats_server.url)
            try:
                for tid in ids:
                    res = await results.wait(tid, timeout=180)
                    assert res.status == "done", res
                await wait_for(lambda: _statuses(home) == {"done": n}, 60, "all done")
                assert all(task_row(home, t) is not None for t in ids)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert (await js.stream_info(TASKS_STREAM)).state.messages == 0  # all acked
            await results.poll()
            assert all(results.count(t) == 1 for t in ids)  # the fabric drops re-publishes

    run(main())
