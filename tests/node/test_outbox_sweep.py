"""The heartbeat's sweep of undelivered results and the outbox loop, on a real task store:
a result the loop publishes while the sweep reads the store is not published again, and the
sweep does not read the store while the loop is publishing and nothing failed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fades.aiostop import cancel_all, wait_for
from fades.node.agent.outbox import Outbox
from fades.node.taskstore import TaskStore
from fades.outcome import Outcome


def _agent(store: TaskStore) -> Any:
    orc = SimpleNamespace(store=store)
    node = SimpleNamespace(orchestrator=orc)
    return SimpleNamespace(
        name="edge", counters={"published": 0}, require_node=lambda: node, stopping=False
    )


def _finished(store: TaskStore, task_id: str) -> None:
    task = {"credentials": {"tenant": "t", "task_id": task_id}, "function": {"artifact": "f"}}
    store.accept(task_id, "t", json.dumps(task))
    store.claim(task_id)
    store.finish(task_id, result={"ok": 1}, timing={}, bytes_read=0, bytes_returned=1)


def test_a_result_the_loop_delivers_during_the_sweeps_read_is_published_once(
    tmp_path: Path,
) -> None:
    store = TaskStore(tmp_path / "tasks.db")
    outbox = Outbox(_agent(store))
    sent: list[str] = []

    async def send(outcome: Outcome) -> None:
        sent.append(outcome.task_id)

    outbox.send = send  # type: ignore[method-assign]
    undelivered = store.undelivered

    def read_then_finish(limit: int = 1000) -> list[Any]:
        # the worker thread commits the end, the sweep reads it, and only then the finish
        # callback hands it to the loop, which publishes it before the sweep looks again
        rows = undelivered(limit)
        outbox.on_finish(store.get("t1"))
        deadline = time.monotonic() + 60
        while undelivered() and time.monotonic() < deadline:
            time.sleep(0.01)
        while outbox._held and time.monotonic() < deadline:
            time.sleep(0.01)
        return rows

    store.undelivered = read_then_finish  # type: ignore[method-assign]

    async def go() -> None:
        outbox.bind()
        _finished(store, "t1")
        loop_task = asyncio.create_task(outbox.loop())
        try:
            await wait_for(outbox.flush(), 60)
        finally:
            await cancel_all([loop_task])

    asyncio.run(go())
    assert sent == ["t1"], f"published {sent}"
    store.close()


def test_the_sweep_waits_while_the_loop_publishes_and_looks_after_a_failure(
    tmp_path: Path,
) -> None:
    store = TaskStore(tmp_path / "tasks.db")
    outbox = Outbox(_agent(store))
    reads: list[int] = []
    undelivered = store.undelivered

    def counted(limit: int = 1000) -> list[Any]:
        reads.append(1)
        return undelivered(limit)

    store.undelivered = counted  # type: ignore[method-assign]
    failing = threading.Event()
    sent: list[str] = []

    async def send(outcome: Outcome) -> None:
        if failing.is_set():
            raise OSError("the fabric is away")
        sent.append(outcome.task_id)

    outbox.send = send  # type: ignore[method-assign]

    async def go() -> None:
        outbox.bind()
        _finished(store, "t1")
        outbox.on_finish(store.get("t1"))  # held by the loop (not running yet)
        await outbox.sweep()
        assert reads == [] and outbox.sweeps_skipped == 1
        # a publish fails: the next sweep reads the store even though the loop is busy
        failing.set()
        _finished(store, "t2")
        assert await outbox.publish_many([store.get("t2")]) == 0
        failing.clear()
        await outbox.sweep()
        assert reads == [1]
        assert sent == ["t2"]  # (t1 is the loop's: the sweep leaves it)

    asyncio.run(go())
    store.close()


def test_a_result_whose_finish_callback_comes_after_the_sweep_is_published_once(
    tmp_path: Path,
) -> None:
    # the worker thread committed the end; before its finish callback ran, a sweep read the
    # result and published it; then the callback hands it to the loop (seen once in CI)
    store = TaskStore(tmp_path / "tasks.db")
    outbox = Outbox(_agent(store))
    sent: list[str] = []

    async def send(outcome: Outcome) -> None:
        sent.append(outcome.task_id)

    outbox.send = send  # type: ignore[method-assign]

    async def go() -> None:
        outbox.bind()
        loop_task = asyncio.create_task(outbox.loop())
        try:
            _finished(store, "t1")
            ended = store.get("t1")  # what the worker read right after committing the end
            await wait_for(outbox.flush(), 60)  # the sweep publishes it
            outbox.on_finish(ended)  # the late callback
            _finished(store, "t2")
            outbox.on_finish(store.get("t2"))  # and a later result: the loop serves it
            deadline = time.monotonic() + 60
            while "t2" not in sent and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            await cancel_all([loop_task])

    asyncio.run(go())
    assert sent == ["t1", "t2"], f"published {sent}"
    store.close()
