"""MemoryBus: the :class:`~fades.bus.base.Bus` in one process (asyncio), for tests and
simulation.

It keeps the semantics that matter to fades, checked by the same contract suite as NATS:
message-id de-duplication within the stream's window, redelivery of a message not acked in
``ack_wait`` (or nak'ed), work-queue retention (an acked message is gone), KV revisions with
create/update conflicts and a watch, request/reply with errors coming back as their class.

Several connections share one :class:`MemoryFabric` (``MemoryBus(fabric)``), the way a
controller and node agents share one NATS server; closing a connection removes its
subscriptions and ends its consumers. Nothing is persisted, and KV ``history``/``ttl`` are
accepted but not enforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fades import errors
from fades.aiostop import cancel_all, wait_for
from fades.bus.base import DUPLICATE_WINDOW_S, Bus, Discard, Handler, Listener
from fades.bus.memory_stores import MemoryKv, MemoryObjects, matches
from fades.errors import FabricError, FadesError, NodeUnavailable, QueueFull

__all__ = [
    "MAX_PAYLOAD",
    "MemoryBus",
    "MemoryDelivery",
    "MemoryFabric",
    "MemoryKv",
    "MemoryObjects",
    "matches",
]

log = logging.getLogger("fades.bus")

#: the largest message, like nats-server's default
MAX_PAYLOAD = 1024 * 1024


@dataclass(slots=True)
class _Msg:
    seq: int
    subject: str
    data: bytes
    msg_id: str | None


@dataclass(slots=True)
class _Consumer:
    filter: str
    ack_wait: float
    next_seq: int = 0
    #: seq -> (redeliver at, times delivered)
    pending: dict[int, tuple[float, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Stream:
    name: str
    subjects: list[str]
    max_per_subject: int | None = None
    max_bytes: int | None = None
    discard: Discard = "old"
    msgs: dict[int, _Msg] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    consumers: dict[str, _Consumer] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryFabric:
    """The shared state: streams, KV buckets, object stores and responders."""

    def __init__(self) -> None:
        self.streams: dict[str, _Stream] = {}
        self.buckets: dict[str, MemoryKv] = {}
        self.stores: dict[str, MemoryObjects] = {}
        self.seq = itertools.count(1)
        #: (pattern, queue, handler, owner)
        self.responders: list[tuple[str, str | None, Handler, MemoryBus]] = []
        self.listeners: list[tuple[str, Listener, MemoryBus]] = []


class MemoryDelivery:
    def __init__(self, stream: _Stream, consumer: _Consumer, msg: _Msg, delivered: int) -> None:
        self._stream = stream
        self._consumer = consumer
        self._seq = msg.seq
        self.subject = msg.subject
        self.data = msg.data
        self.msg_id = msg.msg_id
        self.delivered = delivered

    def _settle(self) -> None:
        self._consumer.pending.pop(self._seq, None)
        self._stream.msgs.pop(self._seq, None)  # work-queue retention

    async def ack(self) -> None:
        self._settle()

    async def term(self) -> None:
        self._settle()

    async def nak(self, delay: float | None = None) -> None:
        if self._seq in self._consumer.pending:
            self._consumer.pending[self._seq] = (time.monotonic() + (delay or 0.0), self.delivered)
            self._stream.changed.set()

    async def in_progress(self) -> None:
        if self._seq in self._consumer.pending:
            deadline = time.monotonic() + self._consumer.ack_wait
            self._consumer.pending[self._seq] = (deadline, self.delivered)


class MemoryBus:
    """One connection to a :class:`MemoryFabric` (a new fabric if none is given)."""

    max_payload = MAX_PAYLOAD

    def __init__(self, fabric: MemoryFabric | None = None) -> None:
        self.fabric = fabric or MemoryFabric()
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def connection(self) -> MemoryBus:
        """Another connection to the same fabric."""
        return MemoryBus(self.fabric)

    def _check(self) -> None:
        if self._closed.is_set():
            raise FabricError("the bus is closed")

    def _spawn(self, coro: asyncio.Future[None] | object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_msgs_per_subject: int | None = None,
        max_bytes: int | None = None,
        discard: Discard = "old",
    ) -> None:
        self._check()
        if discard not in ("old", "new"):
            raise ValueError(f"discard must be 'old' or 'new', not {discard!r}")
        st = self.fabric.streams.setdefault(name, _Stream(name, list(subjects)))
        st.max_per_subject = max_msgs_per_subject
        st.max_bytes = max_bytes
        st.discard = discard

    async def pending(self, stream: str, durable: str) -> int | None:
        self._check()
        st = self.fabric.streams.get(stream)
        con = st.consumers.get(durable) if st else None
        if st is None or con is None:
            return None
        waiting = sum(
            1 for s, m in st.msgs.items() if s >= con.next_seq and matches(con.filter, m.subject)
        )
        return waiting + sum(1 for s in con.pending if s in st.msgs)

    @staticmethod
    def _make_room(st: _Stream, subject: str, size: int) -> None:
        """Apply the stream's bounds before storing ``size`` more bytes on ``subject``."""
        if st.max_per_subject is not None:
            same = [s for s in sorted(st.msgs) if st.msgs[s].subject == subject]
            if len(same) >= st.max_per_subject:
                if st.discard == "new":
                    raise QueueFull(
                        f"stream {st.name}: {subject} already holds {len(same)} messages "
                        f"(the limit is {st.max_per_subject})"
                    )
                for s in same[: len(same) - st.max_per_subject + 1]:
                    del st.msgs[s]
        if st.max_bytes is not None:
            total = sum(len(m.data) for m in st.msgs.values())
            if total + size > st.max_bytes:
                if st.discard == "new":
                    raise QueueFull(
                        f"stream {st.name}: holds {total} bytes, {size} more would exceed "
                        f"the limit of {st.max_bytes}"
                    )
                for s in sorted(st.msgs):
                    if total + size <= st.max_bytes:
                        break
                    total -= len(st.msgs.pop(s).data)

    async def publish_up(self, subject: str, data: bytes, *, msg_id: str | None = None) -> None:
        await self.publish(subject, data, msg_id=msg_id)

    def local(self) -> MemoryBus:
        return self

    def in_domain(self, domain: str | None) -> MemoryBus:
        return self  # one process: a single domain

    async def publish(self, subject: str, data: bytes, *, msg_id: str | None = None) -> None:
        self._check()
        if len(data) > self.max_payload:
            raise FabricError(
                f"publish on {subject}: {len(data)} bytes exceed the limit of {self.max_payload}"
            )
        for st in self.fabric.streams.values():
            if any(matches(p, subject) for p in st.subjects):
                break
        else:
            raise FabricError(f"publish on {subject} not stored: no stream holds that subject")
        now = time.monotonic()
        if msg_id is not None:
            st.seen = {k: t for k, t in st.seen.items() if now - t < DUPLICATE_WINDOW_S}
            if msg_id in st.seen:
                return  # a duplicate: acknowledged, not stored
        self._make_room(st, subject, len(data))
        if msg_id is not None:
            st.seen[msg_id] = now
        seq = next(self.fabric.seq)
        st.msgs[seq] = _Msg(seq, subject, bytes(data), msg_id)
        st.changed.set()

    async def consume(
        self, stream: str, durable: str, subject: str, *, ack_wait: float = 30.0, batch: int = 1
    ) -> AsyncIterator[MemoryDelivery]:
        self._check()
        st = self.fabric.streams.get(stream)
        if st is None:
            raise FabricError(f"no stream {stream}")
        con = st.consumers.setdefault(durable, _Consumer(subject, ack_wait))
        con.ack_wait = ack_wait
        while not self._closed.is_set():
            now = time.monotonic()
            due = sorted(s for s, (at, _) in con.pending.items() if at <= now and s in st.msgs)
            fresh = [
                s
                for s in sorted(st.msgs)
                if s >= con.next_seq and matches(con.filter, st.msgs[s].subject)
            ]
            if due or fresh:
                seq = due[0] if due else fresh[0]
                if not due:
                    con.next_seq = seq + 1
                times = con.pending.get(seq, (0.0, 0))[1] + 1
                con.pending[seq] = (time.monotonic() + con.ack_wait, times)
                yield MemoryDelivery(st, con, st.msgs[seq], times)
                continue
            for s in [s for s in con.pending if s not in st.msgs]:
                del con.pending[s]  # settled through another path
            wait = min((at for at, _ in con.pending.values()), default=now + 1.0) - now
            st.changed.clear()
            with contextlib.suppress(TimeoutError):
                await wait_for(st.changed.wait(), max(0.01, min(wait, 1.0)))

    async def kv(self, bucket: str, *, history: int = 1, ttl: float | None = None) -> MemoryKv:
        self._check()
        return self.fabric.buckets.setdefault(bucket, MemoryKv(bucket))

    async def objects(self, bucket: str) -> MemoryObjects:
        self._check()
        return self.fabric.stores.setdefault(bucket, MemoryObjects(bucket))

    async def request(self, subject: str, data: bytes, *, timeout: float = 5.0) -> bytes:
        self._check()
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.fabric.responders if matches(r[0], subject)]
            if found:
                break
            if time.monotonic() + 0.05 >= deadline:
                raise NodeUnavailable(f"request: nobody serves {subject}")
            await asyncio.sleep(0.05)  # a responder may be (re)starting
        handler = found[0][2]
        try:
            return await wait_for(handler(bytes(data)), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise NodeUnavailable(
                f"request: no answer on {subject} within {timeout:.1f} s"
            ) from None
        except FadesError as exc:  # travels as its kind and message, like over NATS
            raise errors.error_class(exc.kind)(str(exc)) from None
        except Exception as exc:
            raise FadesError(str(exc)) from None

    async def serve(self, subject: str, handler: Handler, *, queue: str | None = None) -> None:
        self._check()
        self.fabric.responders.append((subject, queue, handler, self))

    async def subscribe(self, subject: str, listener: Listener) -> None:
        self._check()
        self.fabric.listeners.append((subject, listener, self))

    async def send(self, subject: str, data: bytes) -> None:
        self._check()
        for pattern, listener, _ in list(self.fabric.listeners):
            if matches(pattern, subject):
                self._spawn(self._deliver(listener, subject, bytes(data)))

    @staticmethod
    async def _deliver(listener: Listener, subject: str, data: bytes) -> None:
        try:
            await listener(subject, data)
        except Exception:
            log.exception("listener on %s failed", subject)

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        f = self.fabric
        f.responders = [r for r in f.responders if r[3] is not self]
        f.listeners = [r for r in f.listeners if r[2] is not self]
        for st in f.streams.values():
            st.changed.set()  # wake consumers so they see the close
        await cancel_all(list(self._tasks))


if TYPE_CHECKING:
    _conforms: type[Bus] = MemoryBus
