"""Grouped commits: the controller's writes to ``controller.db``, off the event loop, in groups.

Every submit, dispatch and outcome writes to SQLite. One thread hop and one commit each cost
more than the write itself, so :class:`GroupCommitter` keeps one writer thread: calls made
while it is busy queue up and the next pass runs them all in one transaction
(:meth:`ControllerStore.group <fades.controller.store.ControllerStore.group>`), each in its
own savepoint (one failing call is undone alone and raises to its own caller), then wakes
every caller at once. A lone call costs about what ``asyncio.to_thread`` did; a burst of N
costs one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from fades.controller.store import ControllerStore

log = logging.getLogger("fades.controller")

T = TypeVar("T")

#: most calls run in one transaction
MAX_GROUP = 512

_Item = tuple[Callable[[], Any], asyncio.Future[Any]]


class GroupCommitter:
    """One writer thread for a store; :meth:`call` from any event loop."""

    def __init__(self, store: ControllerStore, max_group: int = MAX_GROUP) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self.store = store
        self.max_group = max_group
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._closed = False
        #: groups committed and calls run (for tests and the benchmark)
        self.groups = 0
        self.calls = 0
        self._thread = threading.Thread(target=self._run, name="fades-commits", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` (a store method) in the writer thread, in the next group."""
        if self._closed:
            raise RuntimeError("the controller's store writer is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._q.put((lambda: fn(*args, **kwargs), fut))
        return await fut

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
            batch = [first]
            while len(batch) < self.max_group:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                results = self.store.group([fn for fn, _ in batch])
            except BaseException as exc:  # the commit failed: every caller hears it
                log.warning("a group of %d controller.db writes failed: %r", len(batch), exc)
                results = [(False, exc)] * len(batch)
            self.groups += 1
            self.calls += len(batch)
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
