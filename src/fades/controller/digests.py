"""Function digests held in memory, kept current by a watch of the repository's index.

Pinning a task's function to a digest used to cost two key-value lookups per submit (the
name's pointer, then the artifact's record). :class:`DigestCache` watches the index bucket
(``n.<name>`` pointers and ``d.<hex>`` records, see :mod:`fades.fabric.repository`) and
answers from memory: a name whose pointer and record it holds, or a digest whose record it
holds. Anything else (a miss, the watch not caught up yet, the fabric down) returns None and
the caller pins the slow way (:meth:`Publisher.pin <fades.controller.publishing.Publisher.pin>`).

An upload through this controller refreshes its name at once (:meth:`refresh`), so the next
submit pins the new version; an upload through another controller arrives with the watch
(milliseconds). Every key keeps the revision it was read at: an older entry never replaces a
newer one. After a fabric reconnect the watch is restarted and the cache unused until it has
caught up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from fades.aiostop import cancel_all
from fades.bus.base import KeyValue, KvEntry

log = logging.getLogger("fades.controller")

#: seconds between checks that the watch still runs on the current connection
CHECK_S = 1.0


class DigestCache:
    """name -> digest and known digests, from the repository index bucket."""

    def __init__(self, index: KeyValue, reconnects: Callable[[], int] = lambda: 0) -> None:
        self.index = index
        self.reconnects = reconnects
        #: key -> (value, revision) for ``n.*`` and ``d.*`` keys
        self._entries: dict[str, tuple[bytes, int]] = {}
        self.ready = False
        self._epoch = -1
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self.hits = 0
        self.misses = 0

    async def start(self) -> DigestCache:
        self._keeper = asyncio.create_task(self._keep(), name="fades-digests")
        return self

    async def stop(self) -> None:
        await cancel_all((self._keeper, self._task))
        self._keeper = self._task = None
        self.ready = False

    def pin(self, ref: str) -> str | None:
        """The digest ``ref`` (a name or ``sha256:`` digest) names now, or None (ask the
        repository)."""
        digest = None
        if self.ready and self._epoch == self.reconnects():
            d = ref if ref.startswith("sha256:") else self._value(f"n.{ref}")
            if d is not None and self._value(f"d.{d.removeprefix('sha256:')}") is not None:
                digest = d
        if digest is None:
            self.misses += 1
        else:
            self.hits += 1
        return digest

    async def refresh(self, *names_or_digests: str) -> None:
        """Read these names' pointers (and digests' records) from the bucket now."""
        for ref in names_or_digests:
            key = f"d.{ref.removeprefix('sha256:')}" if ref.startswith("sha256:") else f"n.{ref}"
            with contextlib.suppress(Exception):  # unreachable: the watch catches up later
                entry = await self.index.get(key)
                if entry is not None:
                    self._apply(entry)

    def _value(self, key: str) -> str | None:
        held = self._entries.get(key)
        return held[0].decode() if held is not None and held[0] else None

    def _apply(self, e: KvEntry) -> None:
        if not (e.key.startswith("n.") or e.key.startswith("d.")):
            return
        held = self._entries.get(e.key)
        if held is not None and held[1] >= e.revision:
            return
        self._entries[e.key] = (e.value, e.revision)

    async def _watch(self, epoch: int) -> None:
        async for e in self.index.watch(">"):
            if e is None:
                self._epoch = epoch
                self.ready = True
                log.debug("digest cache caught up: %d keys", len(self._entries))
            else:
                self._apply(e)

    async def _keep(self) -> None:
        """(Re)start the watch when it ended or the connection changed."""
        while True:
            epoch = self.reconnects()
            if self._task is None or self._task.done() or (epoch != self._epoch and self.ready):
                await cancel_all([self._task])
                self.ready = False
                self._task = asyncio.create_task(self._watch(epoch), name="fades-digest-watch")
            await asyncio.sleep(CHECK_S)
