"""Fan-in: the inputs of one stage instance in one run, collected until the stage can fire.

A :class:`Gathering` waits for one bundle per expected (upstream stage, producer). It fires
when all arrived, or ``gather.timeout_s`` after the first one arrived (the missing ones are
then passed as skipped). Every bundle that arrived is kept in a :class:`Hold` with the
deliveries it came from; a hold acks its deliveries only when every piece of work they
caused is durable (published downstream, handed over in process and finished there, or its
event stored), so a node killed midway has them redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fades.bus.base import Delivery
from fades.pipelines.protocol import Bundle

log = logging.getLogger("fades.pipelines")

#: how many finished (run, stage, instance) keys a node remembers, to ack late duplicates
DONE_MEMORY = 4096

Key = tuple[str, str, str, str]  # pipeline, run, stage, instance


class Hold:
    """Deliveries to ack once the work they caused is durable (reference counted)."""

    def __init__(
        self,
        deliveries: list[Delivery],
        after_ack: Callable[[], Awaitable[None]] | None = None,
        parents: list[Hold] | None = None,
        on_fail: Callable[[], None] | None = None,
    ) -> None:
        self.deliveries = deliveries
        self.refs = 1
        self.after_ack = after_ack
        #: called when this hold settles as failed, before its parents are released (a
        #: hand-over that failed: its upstream stage must run again when its input returns)
        self.on_fail = on_fail
        #: holds this one was handed over from in process: released with it
        self.parents = list(parents or [])
        for p in self.parents:
            p.acquire()
        self.settled = False
        #: some holder's work failed: the deliveries go back (nak), whoever releases last
        self.failed = False

    def acquire(self) -> None:
        self.refs += 1

    async def release(self, ok: bool = True) -> None:
        """Drop one reference; the last one acks the deliveries if every holder's work
        succeeded, else naks them (redelivery). A failure must not be overruled by a later
        success: a stage handed over in process that failed to make its event durable
        leaves its upstream's input to be delivered again, even when the upstream's own
        work finished after it."""
        self.refs -= 1
        if not ok:
            self.failed = True
        if self.refs > 0 or self.settled:
            return
        self.settled = True
        ok = not self.failed
        for d in self.deliveries:
            try:
                await (d.ack() if ok else d.nak(delay=1.0))
            except Exception as exc:  # it comes back and is recognised as done
                log.warning("bundle %s not settled: %r", d.msg_id, exc)
        if ok and self.after_ack is not None:
            with contextlib.suppress(Exception):
                await self.after_ack()
        if not ok and self.on_fail is not None:
            self.on_fail()
        for p in self.parents:
            await p.release(ok)

    async def keepalive(self) -> None:
        for d in self.deliveries:
            with contextlib.suppress(Exception):
                await d.in_progress()
        for p in self.parents:
            await p.keepalive()


@dataclass
class Arrival:
    bundle: Bundle
    value: Any
    received: float  # epoch seconds


@dataclass
class Gathering:
    key: Key
    expected: set[tuple[str, str]]
    timeout_s: float | None
    arrivals: dict[tuple[str, str], Arrival] = field(default_factory=dict)
    holds: list[Hold] = field(default_factory=list)
    first: float = field(default_factory=time.monotonic)
    fired: bool = False
    timer: asyncio.TimerHandle | None = None

    @property
    def complete(self) -> bool:
        return self.expected <= set(self.arrivals)

    def missing(self) -> list[tuple[str, str]]:
        return sorted(self.expected - set(self.arrivals))


Fire = Callable[[Gathering], None]


class Collector:
    """The open gatherings of one node, and the keys it finished recently."""

    def __init__(self, fire: Fire) -> None:
        self.fire = fire
        self.open: dict[Key, Gathering] = {}
        self.done: OrderedDict[Key, None] = OrderedDict()
        #: finished keys whose result, handed over in process, failed downstream: their input
        #: comes back (nak) and must run the stage again, not be acked as a duplicate
        self.again: OrderedDict[Key, None] = OrderedDict()

    def finished(self, key: Key) -> None:
        self.open.pop(key, None)
        if key in self.again:
            return  # its hand-over already failed: the input's return runs it again
        self.done[key] = None
        while len(self.done) > DONE_MEMORY:
            self.done.popitem(last=False)

    def redo(self, key: Key) -> None:
        """The stage ``key`` handed its result in process to a stage that failed: when its
        input is delivered again, run it again (its task and events are idempotent)."""
        self.done.pop(key, None)
        self.again[key] = None
        while len(self.again) > DONE_MEMORY:
            self.again.popitem(last=False)

    async def arrive(
        self,
        key: Key,
        expected: set[tuple[str, str]],
        timeout_s: float | None,
        arrival: Arrival,
        hold: Hold,
    ) -> None:
        """Add one input; fires the gathering when it is complete (or arms its timeout)."""
        b = arrival.bundle
        src = (b.from_stage, b.producer)
        g = self.open.get(key)
        if g is None:
            self.again.pop(key, None)  # (a stage to run again: its input is back)
        if key in self.done or (g is not None and (g.fired or src in g.arrivals)):
            await hold.release()  # a duplicate of something already handled
            return
        if g is None:
            g = self.open[key] = Gathering(key, set(expected), timeout_s)
            if timeout_s is not None:
                loop = asyncio.get_running_loop()
                g.timer = loop.call_later(timeout_s, self._timeout, key)
        g.expected |= {src}  # a producer the plan no longer lists (re-planned) still counts
        g.arrivals[src] = arrival
        g.holds.append(hold)
        if g.complete:
            self._fire(g)

    def _timeout(self, key: Key) -> None:
        g = self.open.get(key)
        if g is not None and not g.fired:
            self._fire(g)

    def _fire(self, g: Gathering) -> None:
        g.fired = True
        if g.timer is not None:
            g.timer.cancel()
        self.fire(g)

    async def keepalive(self) -> None:
        """Restart the ack deadline of every bundle still waiting for its siblings."""
        for g in list(self.open.values()):
            for h in g.holds:
                await h.keepalive()

    def stale(self, now: float, older_than: float) -> list[Gathering]:
        return [g for g in self.open.values() if not g.fired and now - g.first > older_than]
