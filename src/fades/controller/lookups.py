"""Coalesced reads for the submit path: concurrent submits share one query, off the loop.

Every submit asks ``controller.db`` whether its task id was used before. One thread hop per
question costs more than the query, so :class:`ExistsLookup` collects the questions asked
in the same turn of the event loop (a batch submit asks all of them at once) and answers
them with one :meth:`ControllerStore.existing
<fades.controller.store.ControllerStore.existing>` call in a worker thread.

When nothing else holds the store (no commit, no other read), the query runs right there
on the loop instead: an indexed read costs less than the hop, and the loop only tries the
store's lock, never waits for it. A lone submit is not delayed by a thread.

It is only the early, friendly refusal: recording the task still refuses a duplicate id
(the database's key), so two submits racing with the same id cannot both be accepted.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


async def read(lock: threading.RLock | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` (a blocking store read): on the loop when ``lock`` (the store's) is free
    now, else in a worker thread. Reads of a WAL database never wait for another connection's
    writer, and the lock is only tried, so the loop never blocks."""
    if lock is not None and lock.acquire(blocking=False):
        try:
            return fn(*args)
        finally:
            lock.release()
    return await asyncio.to_thread(fn, *args)


Key = tuple[str, str]


class ExistsLookup:
    """``await lookup(tenant, task_id)``: whether that task was recorded before.

    Args:
        existing: ``existing(keys) -> the keys recorded`` (a blocking store method).
    """

    def __init__(
        self,
        existing: Callable[[Sequence[Key]], set[Key]],
        lock: threading.RLock | None = None,
    ) -> None:
        self.existing = existing
        #: the store's lock: the query runs on the loop when it is free (None: always a thread)
        self.lock = lock
        self._asked: dict[Key, list[asyncio.Future[bool]]] = {}
        self._running: set[asyncio.Task[None]] = set()  # (the loop keeps weak references)
        #: queries run, and how many of them on the loop (for tests and the benchmark)
        self.queries = 0
        self.inline = 0

    async def __call__(self, tenant: str, task_id: str) -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        if not self._asked:
            loop.call_soon(self._flush)  # after every submit of this turn has asked
        self._asked.setdefault((tenant, task_id), []).append(fut)
        return await fut

    def _flush(self) -> None:
        asked, self._asked = self._asked, {}
        if self.lock is not None and self.lock.acquire(blocking=False):  # answered right here
            try:
                self.queries += 1
                self.inline += 1
                found = self.existing(list(asked))
            except Exception as exc:
                _fail(asked, exc)
                return
            finally:
                self.lock.release()
            _answer(asked, found)
            return
        task = asyncio.get_running_loop().create_task(self._answer(asked))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, asked: dict[Key, list[asyncio.Future[bool]]]) -> None:
        try:
            self.queries += 1
            found = await asyncio.to_thread(self.existing, list(asked))
        except BaseException as exc:  # every asker hears the failure
            _fail(asked, exc)
            if not isinstance(exc, Exception):
                raise
            return
        _answer(asked, found)


def _fail(asked: dict[Key, list[asyncio.Future[bool]]], exc: BaseException) -> None:
    for futs in asked.values():
        for f in futs:
            if not f.done():
                f.set_exception(exc)


def _answer(asked: dict[Key, list[asyncio.Future[bool]]], found: set[Key]) -> None:
    for key, futs in asked.items():
        for f in futs:
            if not f.done():
                f.set_result(key in found)
