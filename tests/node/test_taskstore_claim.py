"""TaskStore.claim: a worker's start of a task in one statement (real SQLite)."""

from __future__ import annotations

from pathlib import Path

from fades.node.taskstore import TaskStore


def test_claim_starts_an_accepted_task_and_never_a_finished_one(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks.db")
    try:
        store.accept("a", "t", "{}")
        accepted_at = store.get("a").accepted_at
        assert store.claim("a") == accepted_at
        rec = store.get("a")
        assert rec.status == "running" and rec.attempts == 1 and rec.started_at is not None
        assert store.claim("a") == accepted_at  # resumed after a crash: attempts counted
        assert store.get("a").attempts == 2
        store.fail("a", "TaskCancelled", "cancelled")
        assert store.claim("a") is None  # finished: left as it is
        assert store.get("a").status == "failed" and store.get("a").attempts == 2
        assert store.claim("missing") is None
    finally:
        store.close()
