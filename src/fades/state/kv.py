"""Checkpoints in the fabric's key-value bucket ``fades_state``: one key per stateful task.

The key's value holds the task's owner (the node whose instance is live) and its newest
sealed checkpoint (:mod:`fades.state.seal`); the key's revision is the fencing token. A claim
rewrites the value with the new owner at the current revision (compare-and-set), so any write
made with an older lease fails (``FabricConflict``) and is reported as
:class:`fades.errors.Fenced`. On a clustered fabric the bucket is JetStream-replicated like
every other bucket.

When the task ends, its record is replaced (compare-and-set again) by a small *ended* record
naming the node, not deleted: a failover that reaches another node after the task finished
(its outcome still on its way to the controller) finds it and raises
:class:`fades.errors.StateEnded` instead of running the whole task again from nothing.

The store is synchronous (the orchestrator's threads call it) and bridges into the agent's
event loop, which owns the connection; never call it from that loop itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import re
import struct
from collections.abc import Coroutine
from typing import Any, TypeVar

from fades.bus.base import Bus, KeyValue
from fades.errors import FabricConflict, FabricError, Fenced, StateEnded, StateError
from fades.state.base import Checkpoint, Lease
from fades.state.seal import max_state_bytes, seal, unseal

BUCKET = "fades_state"
#: how long a synchronous call waits for the event loop and the fabric
CALL_TIMEOUT_S = 30.0
_MAGIC = b"FSK1"
#: the record of a task that ended (``_HEAD`` + the node it ended on)
_ENDED = b"FSKE"
_HEAD = struct.Struct("<4sH")
_KEY_OK = re.compile(r"[A-Za-z0-9_=-]{1,200}")
_CLAIM_TRIES = 50
#: room kept in a message for the record's own header and the sealed checkpoint's
_OVERHEAD = 4096

T = TypeVar("T")


def kv_key(task_id: str) -> str:
    """The bucket key of a task (its id when the id is a valid key, else a hash of it)."""
    if _KEY_OK.fullmatch(task_id):
        return task_id
    return "h-" + hashlib.sha256(task_id.encode()).hexdigest()[:40]


def pack(owner: str, sealed: bytes | None) -> bytes:
    raw = owner.encode()
    return _HEAD.pack(_MAGIC, len(raw)) + raw + (sealed or b"")


def ended(node: str) -> bytes:
    """The record of a task that ended on ``node``."""
    raw = node.encode()
    return _HEAD.pack(_ENDED, len(raw)) + raw


def ended_on(value: bytes) -> str | None:
    """The node a task ended on, if ``value`` is an ended record."""
    if len(value) < _HEAD.size or value[:4] != _ENDED:
        return None
    n = _HEAD.unpack_from(value)[1]
    return value[_HEAD.size : _HEAD.size + n].decode("utf-8", "replace")


def unpack(value: bytes) -> tuple[str, bytes | None]:
    """``(owner, sealed checkpoint or None)`` of a stored value (an ended task: no owner,
    no checkpoint)."""
    if len(value) < _HEAD.size:
        raise StateError("the fades_state record is truncated")
    magic, n = _HEAD.unpack_from(value)
    if magic == _ENDED:
        return "", None
    if magic != _MAGIC:
        raise StateError("the fades_state record is not a fades state record")
    owner = value[_HEAD.size : _HEAD.size + n].decode("utf-8", "replace")
    rest = value[_HEAD.size + n :]
    return owner, (bytes(rest) if rest else None)


class KvCheckpoints:
    """:class:`~fades.state.base.Checkpoints` over a Bus KV bucket, called from threads."""

    def __init__(
        self, kv: KeyValue, loop: asyncio.AbstractEventLoop, key: bytes, *, max_payload: int
    ) -> None:
        self._kv, self._loop, self._key = kv, loop, key
        self.limit = min(max_state_bytes(), max_payload - _OVERHEAD)

    @classmethod
    async def open(cls, bus: Bus, key: bytes) -> KvCheckpoints:
        """Open (creating if needed) the ``fades_state`` bucket on ``bus``, bound to the
        running event loop."""
        kv = await bus.kv(BUCKET, history=1)
        return cls(kv, asyncio.get_running_loop(), key, max_payload=bus.max_payload)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("KvCheckpoints is synchronous: call it from a thread, not its loop")
        if self._loop.is_closed():
            coro.close()
            raise FabricError("the fabric connection is closed: checkpoints are unreachable")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(CALL_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise FabricError(
                f"the fades_state bucket did not answer within {CALL_TIMEOUT_S:g} s"
            ) from None
        except concurrent.futures.CancelledError:
            raise FabricError("the fabric connection closed during a checkpoint call") from None

    async def _claim(self, key: str, node: str) -> int:
        for _ in range(_CLAIM_TRIES):
            e = await self._kv.get(key)
            try:
                if e is None:
                    return await self._kv.create(key, pack(node, None))
                done_on = ended_on(e.value) if e.value else None
                if done_on is not None:
                    raise StateEnded(
                        f"task {key} already ended on node {done_on}; node {node} does not "
                        "run it again",
                        task_id=key,
                        node=node,
                    )
                sealed = unpack(e.value)[1] if e.value else None
                return await self._kv.update(key, pack(node, sealed), e.revision)
            except FabricConflict:
                continue  # someone wrote between our read and write: read again
        raise StateError(f"could not claim {key}: {_CLAIM_TRIES} concurrent writes in a row")

    def claim(self, task_id: str, node: str) -> Lease:
        return Lease(task_id, node, self._call(self._claim(kv_key(task_id), node)))

    async def _save(self, lease: Lease, value: bytes) -> int:
        key = kv_key(lease.task_id)
        try:
            return await self._kv.update(key, value, lease.token)
        except FabricConflict:
            e = await self._kv.get(key)
            owner = unpack(e.value)[0] if e is not None and e.value else None
            done_on = ended_on(e.value) if e is not None and e.value else None
            holder = (
                f"node {owner}"
                if owner
                else f"nobody (the task ended on node {done_on})"
                if done_on
                else "nobody (the task was released)"
            )
            raise Fenced(
                f"task moved: another instance holds it ({holder}); node {lease.node}'s "
                f"lease {lease.token} is stale and its checkpoint was not written",
                task_id=lease.task_id,
                node=lease.node,
            ) from None

    def save(self, lease: Lease, ckpt: Checkpoint) -> Lease:
        if ckpt.task_id != lease.task_id:
            raise ValueError(
                f"checkpoint of task {ckpt.task_id} saved with a lease on {lease.task_id}"
            )
        value = pack(lease.node, seal(self._key, ckpt, limit=self.limit))
        return Lease(lease.task_id, lease.node, self._call(self._save(lease, value)))

    def load(self, task_id: str, *, digest: str) -> Checkpoint | None:
        e = self._call(self._kv.get(kv_key(task_id)))
        if e is None or not e.value:
            return None
        sealed = unpack(e.value)[1]
        if sealed is None:
            return None
        return unseal(self._key, sealed, task_id=task_id, digest=digest)

    def owner(self, task_id: str) -> tuple[str, int] | None:
        """``(node, token)`` of the task's live instance, or None."""
        e = self._call(self._kv.get(kv_key(task_id)))
        if e is None or not e.value or ended_on(e.value) is not None:
            return None
        return unpack(e.value)[0], e.revision

    async def _release(self, lease: Lease) -> None:
        key = kv_key(lease.task_id)
        e = await self._kv.get(key)
        if e is not None and e.revision == lease.token:
            # an ended record, not a deletion: a late failover must not start it again (a
            # conflict: claimed meanwhile, the new owner's record stays)
            with contextlib.suppress(FabricConflict):
                await self._kv.update(key, ended(lease.node), lease.token)

    def release(self, lease: Lease) -> None:
        self._call(self._release(lease))
