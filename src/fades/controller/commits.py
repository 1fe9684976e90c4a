"""Grouped commits: the controller's writes to ``controller.db``, off the event loop, in groups.

Every submit, dispatch and outcome writes to SQLite. One thread hop and one commit each cost
more than the write itself, so :class:`GroupCommitter` keeps one writer thread: calls made
while it is busy queue up and the next pass runs them all in one transaction
(:meth:`ControllerStore.group <fades.controller.store.ControllerStore.group>`), each in its
own savepoint (one failing call is undone alone and raises to its own caller), then wakes
every caller at once. A burst of N costs one commit.

A lone call goes straight through: the calls of one event-loop turn are gathered, and when
a turn made exactly one and the writer thread is idle, that one commits right there on the
loop (``controller.db`` is in WAL mode with ``synchronous=NORMAL``: a commit does not wait
for the disk), without the two thread hops. Batching happens only when there is a queue.
The write-ahead log's checkpoints (which do wait for the disk) then run in the writer thread,
every :data:`CHECKPOINT_EVERY` commits, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from fades.controller.store import ControllerStore

log = logging.getLogger("fades.controller")

T = TypeVar("T")

#: most calls run in one transaction
MAX_GROUP = 512
#: commits between two checkpoints of the write-ahead log (run by the writer thread)
CHECKPOINT_EVERY = 200
#: a queue item: checkpoint now
_CHECKPOINT = "checkpoint"

_Item = tuple[Callable[[], Any], asyncio.Future[Any]]


class GroupCommitter:
    """One writer thread for a store; :meth:`call` from any event loop."""

    def __init__(
        self, store: ControllerStore, max_group: int = MAX_GROUP, *, inline: bool = True
    ) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self.store = store
        self.max_group = max_group
        self._q: queue.SimpleQueue[_Item | str | None] = queue.SimpleQueue()
        self._closed = False
        #: a lone call of a loop turn commits on the loop (False: always in the thread)
        self.inline = inline
        #: the calls made in the current turn of each loop (flushed at the turn's end)
        self._turn: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        #: the writer thread holds a group (set and cleared by that thread)
        self._busy = False
        #: lone calls committed on the loop (for tests and the benchmark)
        self.inlined = 0
        #: commits since the last checkpoint, and checkpoints run
        self._uncheckpointed = 0
        self.checkpoints = 0
        if inline:  # a commit on the loop must not wait for the disk
            store.checkpoints_by_caller()
        #: groups committed and calls run (for tests and the benchmark)
        self.groups = 0
        self.calls = 0
        self._thread = threading.Thread(target=self._run, name="fades-commits", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` (a store method) in the writer thread, in the next group."""
        if self._closed:
            raise RuntimeError("the controller's store writer is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        item: _Item = (lambda: fn(*args, **kwargs), fut)
        if not self.inline:
            self._q.put(item)
            return await fut
        turn = self._turn.get(loop)
        if turn is None:
            turn = self._turn[loop] = []
            loop.call_soon(self._end_of_turn, loop)
        turn.append(item)
        return await fut

    def _end_of_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """(On ``loop``) the calls of the turn that ended: a lone one while the writer is
        idle commits here, the rest join the writer's queue."""
        items = self._turn.pop(loop, [])
        if self._closed:  # closed during this turn: the writer takes nothing more
            closed = RuntimeError("the controller's store writer is closed")
            _settle([(f, (False, closed)) for _, f in items])
            return
        if len(items) == 1 and not self._closed and self._q.empty() and not self._busy:
            lock = self.store._lock
            if lock.acquire(blocking=False):  # never waits: a reader or the writer holds it
                try:
                    results = self._commit(items, now=True)
                finally:
                    lock.release()
                if results is not None:  # (None: another connection is writing; the writer)
                    self.inlined += 1
                    _settle(list(zip((f for _, f in items), results, strict=True)))
                    if self._uncheckpointed >= CHECKPOINT_EVERY:
                        self._uncheckpointed = 0
                        self._q.put(_CHECKPOINT)
                    return
        for item in items:
            self._q.put(item)

    @overload
    def _commit(self, batch: list[_Item]) -> list[tuple[bool, Any]]: ...
    @overload
    def _commit(self, batch: list[_Item], now: bool) -> list[tuple[bool, Any]] | None: ...
    def _commit(self, batch: list[_Item], now: bool = False) -> list[tuple[bool, Any]] | None:
        """One transaction for ``batch``; ``now``: only if the database can be written at
        once (None when another connection holds its write lock: nothing was run)."""
        ops = [fn for fn, _ in batch]
        try:
            if now:
                got = self.store.group_now(ops)
                if got is None:
                    return None
                results = got
            else:
                results = self.store.group(ops)
        except BaseException as exc:  # the commit failed: every caller hears it
            log.warning("a group of %d controller.db writes failed: %r", len(batch), exc)
            results = [(False, exc)] * len(batch)
        self.groups += 1
        self.calls += len(batch)
        self._uncheckpointed += 1
        return results

    def _checkpoint(self) -> None:
        try:
            self.store.checkpoint()
            self.checkpoints += 1
        except Exception as exc:  # the next one tries again; SQLite keeps the log meanwhile
            log.warning("a checkpoint of controller.db failed: %r", exc)

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._q.put(None)
        self._thread.join(30)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._q.get()
            if first is None:
                break
            if isinstance(first, str):  # _CHECKPOINT
                self._checkpoint()
                continue
            self._busy = True
            batch = [first]
            while len(batch) < self.max_group:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if isinstance(item, str):  # _CHECKPOINT
                    self._uncheckpointed = CHECKPOINT_EVERY  # (after this group)
                    continue
                batch.append(item)
            results = self._commit(batch)
            self._busy = False
            if self.inline and self._uncheckpointed >= CHECKPOINT_EVERY:
                self._uncheckpointed = 0
                self._checkpoint()
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
            for (_, fut), res in zip(batch, results, strict=True):
                by_loop.setdefault(fut.get_loop(), []).append((fut, res))
            for loop, items in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[asyncio.Future[Any], tuple[bool, Any]]]) -> None:
    for fut, (ok, value) in items:
        if fut.done():
            continue  # the caller was cancelled
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
