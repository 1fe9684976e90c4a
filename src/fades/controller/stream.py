"""The result stream: outcomes of a tenant's tasks as server-sent events.

``GET /v1/results/stream`` keeps one HTTP response open and writes each outcome as it is
stored::

    id: 42
    event: outcome
    data: {"task_id": "t1", "status": "done", "result": ..., ...}

The stream opens with ``event: open`` naming the event id it starts after
(``{"last_event_id": N}``). The ``id`` is the outcome's event id in ``controller.db``
(increasing). A client that
reconnects with ``Last-Event-ID: 42`` (or ``?since=42``) gets every outcome stored after it,
from the database, then live ones: each outcome once. With ``task_id`` filters the stream
starts from the beginning for those tasks (outcomes stored before the client connected are
sent first) and ends with ``event: end`` once every one of them was sent; without filters
and without ``since`` it starts at the newest outcome.

A slow reader never holds up submits or outcomes: each stream has a bounded buffer
(:data:`STREAM_BUFFER` events, :data:`STREAM_BUFFER_BYTES` bytes), and what it holds or reads
from the database at once is bounded by bytes too (:data:`CATCHUP_BYTES`, :data:`CHUNK_BYTES`):
outcomes may be close to 1 MiB each, and a client that never reads holds only that much.
When the buffer fills, the stream sends what it holds, then
``event: behind`` with the last event id it delivered, and ends; the client reconnects with
that id and catches up from the database. A comment line (``: keepalive``) goes out every
:data:`KEEPALIVE_S` seconds of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fades.aiostop import wait_for
from fades.controller.store import StoredOutcome

if TYPE_CHECKING:
    from fades.controller.service import Controller

#: events buffered per stream before it is told it fell behind
STREAM_BUFFER = 1000
#: seconds of silence before a keep-alive comment
KEEPALIVE_S = 15.0
#: how often a waiting stream checks whether the server is stopping
CLOSE_POLL_S = 0.5
#: most task ids one stream may filter on
MAX_STREAM_IDS = 1000
#: outcomes read from the database per catch-up query
CATCHUP_ROWS = 500
#: ... and no more than this many bytes of them (an outcome may be close to 1 MiB)
CATCHUP_BYTES = 4 * 1024 * 1024
#: bytes of outcomes buffered per stream before it is told it fell behind
STREAM_BUFFER_BYTES = 16 * 1024 * 1024
#: one write to the client carries about this many bytes at most
CHUNK_BYTES = 1024 * 1024


@dataclass(slots=True, frozen=True)
class Event:
    id: int
    task_id: str
    json: str


@dataclass(eq=False)
class Subscriber:
    """One open stream: its tenant, filter and bounded buffer."""

    tenant: str
    ids: frozenset[str] | None
    buffer: int
    queue: deque[Event] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    behind: bool = False
    queued_bytes: int = 0

    def offer(self, ev: Event) -> None:
        if self.behind or (self.ids is not None and ev.task_id not in self.ids):
            return
        if len(self.queue) >= self.buffer or self.queued_bytes >= STREAM_BUFFER_BYTES:
            self.behind = True  # dropped from here on: the client catches up from the db
        else:
            self.queue.append(ev)
            self.queued_bytes += len(ev.json)
        self.wake.set()

    def take(self) -> Event:
        ev = self.queue.popleft()
        self.queued_bytes -= len(ev.json)
        return ev


class StreamHub:
    """Fans stored outcomes out to the open streams of their tenant."""

    def __init__(self, controller: Controller, buffer: int | None = None) -> None:
        buffer = STREAM_BUFFER if buffer is None else buffer
        if buffer < 1:
            raise ValueError("the stream buffer must hold at least one event")
        self.controller = controller
        self.buffer = buffer
        self._subs: dict[str, set[Subscriber]] = {}
        self._attached: object = None

    def _attach(self) -> None:
        recorder = self.controller.recorder  # a restarted controller has a new one
        if self._attached is not recorder:
            recorder.listeners.append(self._on_stored)
            self._attached = recorder

    def _on_stored(self, stored: StoredOutcome) -> None:
        out = stored.outcome
        subs = self._subs.get(out.tenant)
        if subs:
            ev = Event(stored.event_id, out.task_id, stored.json)
            for sub in subs:
                sub.offer(ev)

    @property
    def open_streams(self) -> int:
        return sum(len(s) for s in self._subs.values())

    @contextlib.contextmanager
    def subscribed(self, tenant: str, ids: frozenset[str] | None) -> Iterator[Subscriber]:
        self._attach()
        sub = Subscriber(tenant, ids, self.buffer)
        self._subs.setdefault(tenant, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(tenant)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[tenant]

    async def events(
        self,
        tenant: str,
        *,
        task_ids: Sequence[str] | None = None,
        since: int | None = None,
        keepalive: float = KEEPALIVE_S,
        closing: Callable[[], bool] = lambda: False,
    ) -> AsyncIterator[str]:
        """The stream's text, one SSE message per item (see the module docstring).

        ``closing``: true once the server is stopping; the stream then ends (within
        :data:`CLOSE_POLL_S`), so an open stream does not hold up the controller's stop."""
        store = self.controller.store
        ids = frozenset(task_ids) if task_ids else None
        if since is None:
            since = 0 if ids is not None else await asyncio.to_thread(store.last_event_id)
        remaining = set(ids) if ids is not None else None
        if remaining and since > 0:  # those that ended before the resume point were sent
            remaining -= await asyncio.to_thread(store.ended_by, tenant, sorted(remaining), since)
        last = since
        with self.subscribed(tenant, ids) as sub:
            yield _message(None, "open", json.dumps({"last_event_id": since}))
            id_list = sorted(ids) if ids is not None else None
            while True:
                rows = await asyncio.to_thread(
                    store.outcomes_since, tenant, last, id_list, CATCHUP_ROWS, CATCHUP_BYTES
                )
                chunk: list[str] = []  # few writes per query, not one per outcome
                size = 0
                for eid, tid, text in rows:
                    last = max(last, eid)
                    if remaining is not None:
                        remaining.discard(tid)
                    chunk.append(_message(eid, "outcome", text))
                    size += len(text)
                    if size >= CHUNK_BYTES:
                        yield "".join(chunk)
                        chunk, size = [], 0
                if chunk:
                    yield "".join(chunk)
                if not rows:
                    break
            # outcomes are stored in event-id order, so the catch-up sent every one up to
            # ``caught_up``: live copies of those are skipped (no set of sent ids to grow)
            caught_up = last
            while True:
                if remaining is not None and not remaining:
                    yield _message(None, "end", json.dumps({"last_event_id": last}))
                    return
                chunk, size = [], 0  # what arrived meanwhile goes out in few writes
                while sub.queue:
                    ev = sub.take()
                    if ev.id <= caught_up:
                        continue
                    last = max(last, ev.id)
                    if remaining is not None:
                        remaining.discard(ev.task_id)
                    chunk.append(_message(ev.id, "outcome", ev.json))
                    size += len(ev.json)
                    if size >= CHUNK_BYTES:
                        yield "".join(chunk)
                        chunk, size = [], 0
                if chunk:
                    yield "".join(chunk)
                if sub.behind:
                    detail = (
                        f"this stream fell behind (more than {self.buffer} outcomes waiting); "
                        f"reconnect with Last-Event-ID: {last} to catch up"
                    )
                    body = {"detail": detail, "last_event_id": last}
                    yield _message(None, "behind", json.dumps(body))
                    return
                if remaining is not None and not remaining:
                    continue
                sub.wake.clear()
                silent = 0.0
                while not sub.wake.is_set():
                    if closing():
                        return
                    step = min(CLOSE_POLL_S, keepalive - silent)
                    with contextlib.suppress(TimeoutError):
                        await wait_for(sub.wake.wait(), step)
                    silent += step
                    if not sub.wake.is_set() and silent >= keepalive:
                        yield ": keepalive\n\n"
                        silent = 0.0


def _message(eid: int | None, event: str, data: str) -> str:
    head = f"id: {eid}\n" if eid is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"
