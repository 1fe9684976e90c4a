"""Coalesced reads for the submit path: concurrent submits share one query, off the loop.

Every submit asks ``controller.db`` whether its task id was used before. One thread hop per
question costs more than the query, so :class:`ExistsLookup` collects the questions asked
in the same turn of the event loop (a batch submit asks all of them at once) and answers
them with one :meth:`ControllerStore.existing
<fades.controller.store.ControllerStore.existing>` call in a worker thread.

It is only the early, friendly refusal: recording the task still refuses a duplicate id
(the database's key), so two submits racing with the same id cannot both be accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

Key = tuple[str, str]


class ExistsLookup:
    """``await lookup(tenant, task_id)``: whether that task was recorded before.

    Args:
        existing: ``existing(keys) -> the keys recorded`` (a blocking store method).
    """

    def __init__(self, existing: Callable[[Sequence[Key]], set[Key]]) -> None:
        self.existing = existing
        self._asked: dict[Key, list[asyncio.Future[bool]]] = {}
        self._running: set[asyncio.Task[None]] = set()  # (the loop keeps weak references)
        #: queries run (for tests and the benchmark)
        self.queries = 0

    async def __call__(self, tenant: str, task_id: str) -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        if not self._asked:
            loop.call_soon(self._flush)  # after every submit of this turn has asked
        self._asked.setdefault((tenant, task_id), []).append(fut)
        return await fut

    def _flush(self) -> None:
        asked, self._asked = self._asked, {}
        task = asyncio.get_running_loop().create_task(self._answer(asked))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, asked: dict[Key, list[asyncio.Future[bool]]]) -> None:
        try:
            self.queries += 1
            found = await asyncio.to_thread(self.existing, list(asked))
        except BaseException as exc:  # every asker hears the failure
            for futs in asked.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for key, futs in asked.items():
            for f in futs:
                if not f.done():
                    f.set_result(key in found)
