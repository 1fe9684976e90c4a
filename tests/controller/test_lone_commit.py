"""A lone write commits on the event loop at once; a burst still shares one commit in the
writer thread (:mod:`fades.controller.commits`)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from fades.aiostop import wait_for
from fades.controller.commits import GroupCommitter
from fades.controller.store import ControllerStore
from fades.errors import DuplicateTask


def _add(store: ControllerStore, task_id: str) -> str:
    return store.add_task(
        task_id,
        tenant="t",
        node="n",
        where="edge",
        task={"credentials": {"task_id": task_id, "tenant": "t"}},
        placement="test",
        submitted_at=1.0,
    )


def test_a_lone_write_commits_on_the_loop_without_the_writer_thread(tmp_path: Path) -> None:
    store = ControllerStore(tmp_path / "controller.db")
    gc = GroupCommitter(store)
    threads: list[str] = []

    def add(task_id: str) -> str:
        threads.append(threading.current_thread().name)
        return _add(store, task_id)

    async def main() -> None:
        for i in range(5):  # one after the other: each is alone in its turn
            assert await gc.call(add, f"a{i}") == f"a{i}"

    try:
        asyncio.run(main())
        assert gc.inlined == 5 and gc.groups == 5
        assert set(threads) == {threading.main_thread().name}
        assert store.exists("t", "a4")  # committed: a second connection sees it
        other = ControllerStore(tmp_path / "controller.db")
        assert other.exists("t", "a0")
        other.close()
    finally:
        gc.close()
        store.close()


def test_a_burst_shares_one_commit_in_the_writer_thread(tmp_path: Path) -> None:
    store = ControllerStore(tmp_path / "controller.db")
    gc = GroupCommitter(store)
    threads: list[str] = []

    def add(task_id: str) -> str:
        threads.append(threading.current_thread().name)
        return _add(store, task_id)

    async def main() -> list[str]:
        return list(await asyncio.gather(*(gc.call(add, f"b{i}") for i in range(50))))

    try:
        assert asyncio.run(main()) == [f"b{i}" for i in range(50)]
        assert gc.inlined == 0 and gc.calls == 50
        assert gc.groups < 50  # shared commits
        assert set(threads) == {"fades-commits"}
    finally:
        gc.close()
        store.close()


def test_a_failing_lone_write_raises_to_its_caller_and_the_next_one_works(
    tmp_path: Path,
) -> None:
    store = ControllerStore(tmp_path / "controller.db")
    gc = GroupCommitter(store)

    async def main() -> None:
        await gc.call(_add, store, "dup")
        with pytest.raises(DuplicateTask):
            await gc.call(_add, store, "dup")
        assert await gc.call(_add, store, "after") == "after"

    try:
        asyncio.run(main())
        assert gc.inlined == 3
        assert store.exists("t", "after")
    finally:
        gc.close()
        store.close()


def test_a_lone_write_waits_for_the_thread_when_a_reader_holds_the_store(
    tmp_path: Path,
) -> None:
    """The loop never blocks on the store's lock: the write goes to the writer thread."""
    store = ControllerStore(tmp_path / "controller.db")
    gc = GroupCommitter(store)
    held, release = threading.Event(), threading.Event()

    def reader() -> None:
        with store._lock:
            held.set()
            release.wait(60)

    async def main() -> None:
        t = threading.Thread(target=reader)
        t.start()
        assert held.wait(60)
        write = asyncio.ensure_future(gc.call(_add, store, "c1"))
        await asyncio.sleep(0)  # the turn ends: the write is queued, the loop runs on
        await asyncio.sleep(0.05)
        assert not write.done()
        release.set()
        assert await write == "c1"
        t.join(60)

    try:
        asyncio.run(main())
        assert gc.inlined == 0 and gc.calls == 1
    finally:
        gc.close()
        store.close()


def test_a_write_of_a_turn_in_which_the_writer_closed_is_refused(tmp_path: Path) -> None:
    store = ControllerStore(tmp_path / "controller.db")
    gc = GroupCommitter(store)

    async def main() -> None:
        write = asyncio.ensure_future(gc.call(_add, store, "late"))
        await asyncio.sleep(0)  # the call is made, its turn not over yet
        gc.close()
        with pytest.raises(RuntimeError, match="closed"):
            await write

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_a_lone_id_lookup_is_answered_on_the_loop_unless_the_store_is_held(
    tmp_path: Path,
) -> None:
    from fades.controller.lookups import ExistsLookup

    store = ControllerStore(tmp_path / "controller.db")
    _add(store, "seen")
    lookup = ExistsLookup(store.existing, store._lock)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store._lock:
            held.set()
            release.wait(60)

    async def main() -> None:
        assert await lookup("t", "seen") is True
        assert await lookup("t", "new") is False
        assert lookup.inline == 2
        t = threading.Thread(target=holder)
        t.start()
        assert held.wait(60)
        asked = asyncio.ensure_future(lookup("t", "seen"))
        await asyncio.sleep(0.05)
        assert not asked.done()  # in a worker thread, waiting for the store
        release.set()
        assert await asked is True
        assert lookup.inline == 2 and lookup.queries == 3
        t.join(60)

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_checkpoints_of_lone_commits_run_in_the_writer_thread(tmp_path: Path) -> None:
    """A commit on the loop never copies the write-ahead log into the database (that waits
    for the disk): the writer thread does, every CHECKPOINT_EVERY commits."""
    from fades.controller import commits

    store = ControllerStore(tmp_path / "controller.db")
    gc = GroupCommitter(store)
    where: list[str] = []
    original = store.checkpoint

    def spy() -> None:
        where.append(threading.current_thread().name)
        original()

    store.checkpoint = spy  # type: ignore[method-assign]
    n = commits.CHECKPOINT_EVERY * 2 + 5

    async def main() -> None:
        for i in range(n):
            await gc.call(_add, store, f"w{i}")

    try:
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        asyncio.run(main())
        assert gc.calls == n and gc.inlined > n // 2  # (a few wait behind a checkpoint)
        deadline = time.monotonic() + 60
        while gc.checkpoints < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gc.checkpoints >= 2
        assert set(where) == {"fades-commits"}
    finally:
        gc.close()
        store.close()


def test_a_lone_write_never_waits_on_the_loop_for_another_connections_write_lock(
    tmp_path: Path,
) -> None:
    # the pipelines' store writes controller.db through a second connection: while it holds
    # the write lock, a lone write goes to the writer thread instead of SQLite's busy handler
    # blocking the event loop (up to 5 s, then "database is locked")
    import sqlite3

    store = ControllerStore(tmp_path / "controller.db")
    gc = GroupCommitter(store)
    other = sqlite3.connect(tmp_path / "controller.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock

    async def main() -> tuple[str, int]:
        call = asyncio.ensure_future(gc.call(_add, store, "held"))
        ticks = 0
        while ticks < 20:  # the loop keeps turning while the write waits
            await asyncio.sleep(0)
            ticks += 1
        assert not call.done()
        other.execute("COMMIT")  # the other writer finishes: the queued write goes through
        return await wait_for(call, 60), ticks

    try:
        got, ticks = asyncio.run(main())
        assert got == "held" and ticks == 20
        assert gc.inlined == 0
        assert store.exists("t", "held")
    finally:
        other.close()
        gc.close()
        store.close()
