"""The key-value buckets and object stores of :class:`~fades.bus.nats.NatsBus` (JetStream),
with nats-py's exceptions translated into :mod:`fades.errors` at this boundary."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from nats.js.errors import (
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
    ObjectNotFoundError,
)
from nats.js.kv import KeyValue as NatsKeyValue
from nats.js.object_store import ObjectStore as NatsObjectStore

from fades.aiostop import wait_for
from fades.bus.base import KvEntry
from fades.errors import FabricConflict, FabricError

T = TypeVar("T")

#: bound on one JetStream publish or KV/object operation
OP_TIMEOUT_S = 5.0


def fabric_error(what: str, exc: BaseException) -> FabricError:
    if isinstance(exc, FabricError):
        return exc
    return FabricError(f"{what}: {exc!r}")


async def open_or_create(what: str, opening: Awaitable[T], create: Callable[[], Awaitable[T]]) -> T:
    """Open a bucket, creating it if the server has none of that name."""
    try:
        return await wait_for(opening, OP_TIMEOUT_S)
    except (NotFoundError, ObjectNotFoundError):
        pass
    except Exception as exc:
        raise fabric_error(what, exc) from exc
    try:
        return await wait_for(create(), OP_TIMEOUT_S)
    except Exception as exc:
        raise fabric_error(f"creating {what}", exc) from exc


class NatsKv:
    """A JetStream key-value bucket."""

    def __init__(self, kv: NatsKeyValue, bucket: str) -> None:
        self._kv = kv
        self.bucket = bucket

    async def get(self, key: str) -> KvEntry | None:
        try:
            e = await wait_for(self._kv.get(key), OP_TIMEOUT_S)
        except KeyNotFoundError:  # also a deleted key
            return None
        except Exception as exc:
            raise fabric_error(f"KV {self.bucket} get {key}", exc) from exc
        if e is None or e.value is None or e.revision is None:
            return None
        return KvEntry(key, e.value, e.revision)

    async def put(self, key: str, value: bytes) -> int:
        try:
            return int(await wait_for(self._kv.put(key, value), OP_TIMEOUT_S))
        except Exception as exc:
            raise fabric_error(f"KV {self.bucket} put {key}", exc) from exc

    async def create(self, key: str, value: bytes) -> int:
        try:
            return int(await wait_for(self._kv.create(key, value), OP_TIMEOUT_S))
        except KeyWrongLastSequenceError:
            raise FabricConflict(f"KV {self.bucket}: {key} already exists") from None
        except Exception as exc:
            raise fabric_error(f"KV {self.bucket} create {key}", exc) from exc

    async def update(self, key: str, value: bytes, revision: int) -> int:
        try:
            return int(await wait_for(self._kv.update(key, value, last=revision), OP_TIMEOUT_S))
        except KeyWrongLastSequenceError:
            raise FabricConflict(
                f"KV {self.bucket}: {key} changed since revision {revision}"
            ) from None
        except Exception as exc:
            raise fabric_error(f"KV {self.bucket} update {key}", exc) from exc

    async def delete(self, key: str) -> None:
        try:
            await wait_for(self._kv.delete(key), OP_TIMEOUT_S)
        except Exception as exc:
            raise fabric_error(f"KV {self.bucket} delete {key}", exc) from exc

    async def keys(self) -> list[str]:
        # Not nats-py's keys(): it lists through a watcher whose "caught up" marker can arrive
        # before the entries on a loaded machine, returning too few keys. The stream's subject
        # counts are exact; a subject whose last entry is a delete marker is not a key.
        pre = self._kv._pre
        try:
            info = await wait_for(
                self._kv._js.stream_info(self._kv._stream, subjects_filter=f"{pre}>"),
                OP_TIMEOUT_S,
            )
        except Exception as exc:
            raise fabric_error(f"KV {self.bucket} keys", exc) from exc
        subjects = info.state.subjects or {}
        keys = [subject[len(pre) :] for subject in subjects]
        return [key for key in keys if await self.get(key) is not None]

    async def watch(self, key: str = ">") -> AsyncIterator[KvEntry | None]:
        try:
            watcher = await wait_for(self._kv.watch(key), OP_TIMEOUT_S)
        except Exception as exc:
            raise fabric_error(f"KV {self.bucket} watch {key}", exc) from exc
        try:
            async for e in watcher:
                if e is None:
                    yield None
                elif e.operation in ("DEL", "PURGE"):
                    yield KvEntry(e.key, b"", e.revision or 0)
                else:
                    yield KvEntry(e.key, e.value or b"", e.revision or 0)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]


class NatsObjects:
    """A JetStream object store (keep objects at or below 1 MiB: bigger gets stall)."""

    def __init__(self, store: NatsObjectStore, bucket: str) -> None:
        self._store = store
        self.bucket = bucket

    async def put(self, name: str, data: bytes) -> None:
        try:
            await wait_for(self._store.put(name, data), 4 * OP_TIMEOUT_S)
        except Exception as exc:
            raise fabric_error(f"object {self.bucket}/{name} put", exc) from exc

    async def get(self, name: str) -> bytes | None:
        try:
            res = await wait_for(self._store.get(name), 4 * OP_TIMEOUT_S)
        except (ObjectNotFoundError, NotFoundError):
            return None
        except Exception as exc:
            raise fabric_error(f"object {self.bucket}/{name} get", exc) from exc
        return res.data or b""

    async def delete(self, name: str) -> None:
        try:
            await wait_for(self._store.delete(name), OP_TIMEOUT_S)
        except (ObjectNotFoundError, NotFoundError):
            return
        except Exception as exc:
            raise fabric_error(f"object {self.bucket}/{name} delete", exc) from exc

    async def names(self) -> list[str]:
        try:
            infos = await wait_for(self._store.list(), OP_TIMEOUT_S)
        except (ObjectNotFoundError, NotFoundError):
            return []
        except Exception as exc:
            raise fabric_error(f"object {self.bucket} list", exc) from exc
        return sorted(i.name for i in infos if not i.deleted)
