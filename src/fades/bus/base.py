"""The Bus protocol: the five things fades asks of its fabric.

1. durable publish with a message id (a duplicate id within the stream's window is dropped);
2. durable consume with ack (at-least-once; a message not acked is redelivered);
3. key-value buckets with revisions (compare-and-set for fencing) and a watch;
4. an object store for artifacts;
5. request/reply, plus plain subscribe for fire-and-forget subjects (sensors, pings).

Implementations translate their own exceptions into :class:`fades.errors.FabricError`
(unreachable, timed out) or ``NodeUnavailable`` (no responder) at this boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class KvEntry:
    """One key's value and the revision that wrote it."""

    key: str
    value: bytes
    revision: int


class Delivery(Protocol):
    """A message taken from a durable consumer; ack it once it is safely handled."""

    subject: str
    data: bytes
    msg_id: str | None
    #: how many times this message was delivered (1 the first time)
    delivered: int

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None:
        """Ask for redelivery (after ``delay`` seconds)."""
        ...

    async def term(self) -> None:
        """Never deliver this message again."""
        ...

    async def in_progress(self) -> None:
        """Still working on it: restart the ack deadline (a long artifact fetch)."""
        ...


class KeyValue(Protocol):
    """A key-value bucket."""

    async def get(self, key: str) -> KvEntry | None: ...

    async def put(self, key: str, value: bytes) -> int:
        """Write ``value``; returns the new revision."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Write only if ``key`` does not exist.

        Raises:
            fades.errors.FabricConflict: it exists.
        """
        ...

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Write only if ``key`` is still at ``revision`` (fencing).

        Raises:
            fades.errors.FabricConflict: someone else wrote it since.
        """
        ...

    async def delete(self, key: str) -> None: ...

    async def keys(self) -> list[str]: ...

    def watch(self, key: str = ">") -> AsyncIterator[KvEntry | None]:
        """Current values, then ``None`` once caught up, then every change (deletes have an
        empty value)."""
        ...


class ObjectStore(Protocol):
    """Named blobs (function artifacts)."""

    async def put(self, name: str, data: bytes) -> None: ...

    async def get(self, name: str) -> bytes | None: ...

    async def delete(self, name: str) -> None: ...

    async def names(self) -> list[str]: ...


#: seconds within which a stream drops a second message with the same id
DUPLICATE_WINDOW_S = 600.0

#: what a bounded stream does when full: drop its oldest message, or refuse the new one
Discard = Literal["old", "new"]

Handler = Callable[[bytes], Awaitable[bytes]]
Listener = Callable[[str, bytes], Awaitable[None]]


class Bus(Protocol):
    """A connection to the fabric."""

    #: the largest message the fabric carries, in bytes
    @property
    def max_payload(self) -> int: ...

    async def stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_msgs_per_subject: int | None = None,
        max_bytes: int | None = None,
        discard: Discard = "old",
    ) -> None:
        """Create (if missing) a durable work-queue stream holding ``subjects``, which
        de-duplicates message ids within :data:`DUPLICATE_WINDOW_S`.

        Optionally bounded: at most ``max_msgs_per_subject`` messages waiting on any one
        subject and ``max_bytes`` in all. When a bound is reached, ``discard="old"`` drops the
        oldest message to make room, ``discard="new"`` refuses the publish with
        :class:`fades.errors.QueueFull`. Calling it again with other bounds updates them
        (idempotent with the same ones).
        """
        ...

    async def pending(self, stream: str, durable: str) -> int | None:
        """How many messages the durable consumer has not acked yet (waiting or in flight);
        None if there is no such consumer."""
        ...

    async def publish(self, subject: str, data: bytes, *, msg_id: str | None = None) -> None:
        """Store ``data`` durably on the stream that holds ``subject`` (acked by the server).

        Raises:
            fades.errors.QueueFull: the stream is at a bound and its policy is discard new.
            fades.errors.FabricError: not stored (unreachable, no stream, timed out).
        """
        ...

    async def publish_up(self, subject: str, data: bytes, *, msg_id: str | None = None) -> None:
        """Publish something the edge produced for the hub (a task's outcome, a pipeline
        event): like :meth:`publish`, but a process at a site stores it in the site's own
        JetStream first, from where it flows to the hub's stream holding ``subject`` once
        the uplink is up (exactly once: the message id de-duplicates). Without a site it
        is :meth:`publish`."""
        ...

    def local(self) -> Bus:
        """The same connection, but streams, buckets and publishes in the site's own
        JetStream domain (what keeps working while the site's uplink is down). Without a
        site, the bus itself."""
        ...

    def in_domain(self, domain: str | None) -> Bus:
        """The same connection, but streams, buckets, consumers and publishes in the
        JetStream domain ``domain`` (``$JS.<domain>.API``: a site's leaf server reached
        from the hub, or from a node at that site); None: the bus's own domain. A site's
        pipeline keeps its bundle stream there."""
        ...

    def consume(
        self, stream: str, durable: str, subject: str, *, ack_wait: float = 30.0, batch: int = 1
    ) -> AsyncIterator[Delivery]:
        """Deliveries from a durable consumer of ``stream`` filtered on ``subject``; one not
        acked within ``ack_wait`` seconds (or nak'ed) is delivered again. The iterator rides
        out a fabric restart (it re-subscribes) and ends when the bus closes. ``batch``: at
        most this many messages are taken from the fabric per pull (the consumer holds them
        un-acked meanwhile)."""
        ...

    async def kv(self, bucket: str, *, history: int = 1, ttl: float | None = None) -> KeyValue:
        """Open (creating if needed) a key-value bucket."""
        ...

    async def objects(self, bucket: str) -> ObjectStore:
        """Open (creating if needed) an object store."""
        ...

    async def request(self, subject: str, data: bytes, *, timeout: float = 5.0) -> bytes:
        """Send a request and return the reply.

        Raises:
            fades.errors.NodeUnavailable: nobody serves ``subject``.
            fades.errors.FabricError: timed out or unreachable.
        """
        ...

    async def serve(self, subject: str, handler: Handler, *, queue: str | None = None) -> None:
        """Answer requests on ``subject`` with ``handler`` until the bus closes."""
        ...

    async def subscribe(self, subject: str, listener: Listener) -> None:
        """Call ``listener(subject, data)`` for every plain message on ``subject``."""
        ...

    async def send(self, subject: str, data: bytes) -> None:
        """Fire-and-forget publish (not stored)."""
        ...

    async def close(self) -> None: ...
