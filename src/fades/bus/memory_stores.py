"""The key-value and object buckets of :class:`~fades.bus.memory.MemoryBus` (in one process,
like a JetStream KV stream and object store), and NATS subject matching (:func:`matches`).
:mod:`fades.bus.memory` re-exports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fades.bus.base import KvEntry
from fades.errors import FabricConflict, FabricError


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` is one or more tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


class MemoryKv:
    """A key-value bucket with one revision counter, like a JetStream KV stream."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self._data: dict[str, KvEntry] = {}
        self._rev = 0
        self._watchers: list[tuple[str, asyncio.Queue[KvEntry]]] = []

    def _write(self, key: str, value: bytes) -> int:
        if not key or any(c in key for c in " \t*>") or key.startswith("."):
            raise FabricError(f"KV {self.bucket}: {key!r} is not a valid key")
        self._rev += 1
        entry = KvEntry(key, value, self._rev)
        if value:
            self._data[key] = entry
        else:
            self._data.pop(key, None)
        for pattern, q in self._watchers:
            if matches(pattern, key):
                q.put_nowait(entry)
        return self._rev

    async def get(self, key: str) -> KvEntry | None:
        return self._data.get(key)

    async def put(self, key: str, value: bytes) -> int:
        return self._write(key, value)

    async def create(self, key: str, value: bytes) -> int:
        if key in self._data:
            raise FabricConflict(f"KV {self.bucket}: {key} already exists")
        return self._write(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        cur = self._data.get(key)
        if cur is None or cur.revision != revision:
            raise FabricConflict(f"KV {self.bucket}: {key} changed since revision {revision}")
        return self._write(key, value)

    async def delete(self, key: str) -> None:
        if key in self._data:
            self._write(key, b"")

    async def keys(self) -> list[str]:
        return sorted(self._data)

    async def watch(self, key: str = ">") -> AsyncIterator[KvEntry | None]:
        q: asyncio.Queue[KvEntry] = asyncio.Queue()
        item = (key, q)
        self._watchers.append(item)
        try:
            for e in sorted(self._data.values(), key=lambda e: e.revision):
                if matches(key, e.key):
                    yield e
            yield None
            while True:
                yield await q.get()
        finally:
            self._watchers.remove(item)


class MemoryObjects:
    """An object bucket: names to bytes."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self._data: dict[str, bytes] = {}

    async def put(self, name: str, data: bytes) -> None:
        self._data[name] = bytes(data)

    async def get(self, name: str) -> bytes | None:
        return self._data.get(name)

    async def delete(self, name: str) -> None:
        self._data.pop(name, None)

    async def names(self) -> list[str]:
        return sorted(self._data)
