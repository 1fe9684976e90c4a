"""Orchestrator.wait is woken by the end of the task it waits for, not by every other task's
end (each wake-up re-reads the task's record). Real SQLite, real wasmtime, real workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

SLEEPY = """
import time

def main(data, params):
    end = time.monotonic() + params.get("seconds", 0.5)
    while time.monotonic() < end:
        pass
    return params.get("tag")
"""
N = 40
OK = "def main(data, params):\n    return params.get('tag')\n"


def test_a_waiter_is_not_woken_by_other_tasks_and_still_sees_its_own_end(
    make_node: Callable[..., Any], make_task: Callable[..., dict[str, Any]]
) -> None:
    node = make_node(functions={"sleepy": SLEEPY, "ok": OK}, capacity=2)
    orc = node.orchestrator
    slow = orc.submit(
        make_task("sleepy", memory_mib=32, time_budget_ms=60_000, params={"seconds": 15, "tag": 1})
    )
    reads: list[str] = []
    get = orc.store.get

    def counted(task_id: str) -> Any:
        if task_id == slow:
            reads.append(task_id)
        return get(task_id)

    orc.store.get = counted  # type: ignore[method-assign]
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(orc.wait(slow, timeout=120)))
    t0 = time.monotonic()
    waiter.start()
    fast = [orc.submit(make_task("ok", memory_mib=32, params={"tag": i})) for i in range(N)]
    assert [orc.wait(t, timeout=120).result for t in fast] == list(range(N))
    during, elapsed = len(reads), time.monotonic() - t0
    waiter.join(timeout=120)
    assert got and got[0].status == "done" and got[0].result == 1
    # N other tasks ended meanwhile: without the filter each woke the waiter (>= N reads);
    # with it, only its own 0.5 s poll did
    assert during <= elapsed / 0.5 + 3, (during, elapsed)
    assert during < N, (during, elapsed)
