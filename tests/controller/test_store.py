"""controller.db: tasks keyed by (tenant, id), wire ids unique across tenants, the first
outcome wins, and a listing bounded in bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fades.controller.store import ControllerStore
from fades.errors import DuplicateTask, TaskNotFound
from fades.outcome import Outcome


def add(store: ControllerStore, tenant: str, tid: str, at: float = 0.0) -> str:
    return store.add_task(
        tid, tenant=tenant, node="n", where="edge", task={}, placement="p", submitted_at=at
    )


def test_ids_per_tenant_and_unique_wire_ids(tmp_path: Path) -> None:
    store = ControllerStore(tmp_path / "c.db")
    assert add(store, "a", "job") == "job"
    other = add(store, "b", "job")
    assert other != "job" and other.startswith("job.") and len(other) <= 64
    assert store.by_wire_id("job") == ("a", "job") and store.by_wire_id(other) == ("b", "job")
    with pytest.raises(DuplicateTask):
        add(store, "b", "job")
    with pytest.raises(TaskNotFound):
        store.get("job", "c")
    first = Outcome(task_id="job", tenant="b", node="n", status="done", result=1)
    assert store.add_outcome(first) and not store.add_outcome(
        first.model_copy(update={"result": 2})
    )
    rec = store.get("job", "b")
    assert rec.status == "done" and rec.outcome is not None and rec.outcome.result == 1
    assert store.get("job", "a").outcome is None
    store.close()


def test_a_listing_is_bounded_in_bytes(tmp_path: Path) -> None:
    store = ControllerStore(tmp_path / "c.db")
    for i in range(5):
        add(store, "a", f"t{i}", at=i)
        store.add_outcome(
            Outcome(task_id=f"t{i}", tenant="a", node="n", status="done", result="x" * 1000)
        )
    assert [r.task_id for r in store.list("a", 10)] == ["t4", "t3", "t2", "t1", "t0"]
    assert [r.task_id for r in store.list("a", 10, max_bytes=3000)] == ["t4", "t3"]
    assert [r.task_id for r in store.list("a", 10, max_bytes=1)] == ["t4"]  # never empty
    assert [r.task_id for r in store.list("a", 2)] == ["t4", "t3"]
    store.close()
