"""The node's task store shared by threads: a worker claiming tasks while the intake stores a
burst in one transaction. A claim's ``UPDATE ... RETURNING`` left unread outside the lock
made the other thread's COMMIT fail ("cannot commit transaction - SQL statements in
progress"), seen as undelivered results in a chaos run."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from fades.node.taskstore import TaskStore


def test_claims_and_bursts_from_two_threads_never_break_a_commit(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks.db")
    n = 400
    for i in range(n):
        store.accept(f"c{i}", "t", json.dumps({"i": i}))
    errors: list[BaseException] = []
    claimed: list[float | None] = []

    def claimer() -> None:
        try:
            for i in range(n):
                claimed.append(store.claim(f"c{i}"))
        except BaseException as exc:
            errors.append(exc)

    def intake() -> None:
        try:
            for b in range(n // 4):
                rows = [(f"b{b}-{k}", "t", "{}") for k in range(4)]
                assert all(store.accept_many(rows))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer), threading.Thread(target=intake)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(claimed) == n and all(c is not None for c in claimed)
    assert store.claim("c0") is not None  # an interrupted 'running' task can be claimed again
    assert store.claim("nope") is None
