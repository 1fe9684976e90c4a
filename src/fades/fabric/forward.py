"""The site's forwarder: what a site stored in ``FADES_UP`` goes to the hub, acked only once
the hub stored it.

At a site, :meth:`fades.bus.nats.NatsBus.publish_up` stores ``<subject>`` as
``fades.up.<site>.<subject>`` in the site stream ``FADES_UP`` (:mod:`fades.fabric.upstream`),
which accepts while the uplink is down. Every node agent at the site runs an
:class:`UpForwarder`: a durable pull consumer on ``FADES_UP`` (``up-forward``, shared by the
site's agents) that publishes each message to the hub as ``<subject>`` with its own message
id, and acks it in ``FADES_UP`` only after the hub's stream answered that it stored it.

- **Nothing lost:** a message leaves the consumer's pending set only after the hub stored it.
  A forwarder that dies (kill -9) leaves its un-acked messages to be delivered again after
  :data:`ACK_WAIT_S`; a hub server that dies, or a cut uplink, makes the publish fail and it
  is tried again (with the message kept in progress).
- **Nothing twice:** a message forwarded again (its ack lost, a redelivery) carries the same
  message id, which the hub stream's de-duplication drops; beyond its window the controller
  keeps the first outcome of a task and the first event of a stage.
- **Order:** up to :data:`WINDOW` messages are in flight at once, so the hub may store them
  out of order; what goes up (task outcomes, stage events) is kept by id, not by order.
- **Drain:** after the link returns, the next try comes within :data:`RETRY_MAX_S`, and the
  backlog goes up :data:`WINDOW` messages at a time.

(Before this, the hub's streams *sourced* each site's ``FADES_UP``. A source restarts on a
server-side backoff of up to a minute after a cut, and re-adding it to skip that backoff lost
the messages the old source had in flight: 23 of 1000 results in a chaos run.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from fades.aiostop import cancel_all
from fades.errors import FabricError
from fades.fabric.upstream import UP_PREFIX, UP_STREAM

if TYPE_CHECKING:
    from fades.bus.base import Delivery
    from fades.bus.nats import NatsBus

log = logging.getLogger("fades.fabric")

#: the site's durable consumer of ``FADES_UP`` (shared by the site's node agents)
DURABLE = "up-forward"
#: seconds a message taken by a forwarder stays its own before it is delivered again
ACK_WAIT_S = 30.0
#: messages taken per pull
BATCH = 64
#: messages a forwarder has in flight to the hub at once
WINDOW = 32
#: first and longest pause between tries of a publish the hub did not store
RETRY_MIN_S, RETRY_MAX_S = 0.1, 1.0


class UpForwarder:
    """Forwards one site's ``FADES_UP`` to the hub (``bus`` is the agent's bus at the site).

    Counters (for tests and benchmarks): ``forwarded`` messages the hub stored, ``retries``
    publishes tried again."""

    def __init__(self, bus: NatsBus) -> None:
        site = bus.settings.site
        if not site:
            raise ValueError("an UpForwarder runs at a site: the bus has no FabricSettings.site")
        self.bus = bus
        self.site = site
        self.prefix = f"{UP_PREFIX}.{site}."
        self.forwarded = 0
        self.retries = 0
        self._failing_since = 0.0  # when publishes to the hub began failing (0: they work)

    async def run(self) -> None:
        """Forward until cancelled; a failing pull is retried (the iterator rides outages)."""
        await self.bus.ensure_up()
        local = self.bus.local()
        window = asyncio.Semaphore(WINDOW)
        flying: set[asyncio.Task[None]] = set()

        async def one(d: Delivery) -> None:
            try:
                await self.forward(d)
            except Exception as exc:  # not acked: delivered again after ACK_WAIT_S
                log.warning("site %s: %s not forwarded: %r", self.site, d.msg_id, exc)
            finally:
                window.release()

        try:
            while True:
                try:
                    async for d in local.consume(
                        UP_STREAM, DURABLE, f"{self.prefix}>", ack_wait=ACK_WAIT_S, batch=BATCH
                    ):
                        await window.acquire()
                        task = asyncio.create_task(one(d))
                        flying.add(task)
                        task.add_done_callback(flying.discard)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the consumer itself failed: open it again
                    log.warning("site %s: forwarding to the hub stopped (%r); again",
                                self.site, exc)  # fmt: skip
                    await asyncio.sleep(RETRY_MAX_S)
        finally:
            await cancel_all(list(flying))

    async def forward(self, d: Delivery) -> None:
        """Publish one message to the hub until it is stored, then ack it at the site."""
        if not d.subject.startswith(self.prefix):  # not ours to forward (cannot happen)
            await d.term()
            return
        subject = d.subject[len(self.prefix) :]
        pause, touched = RETRY_MIN_S, time.monotonic()
        while True:
            try:
                await self.bus.publish(subject, d.data, msg_id=d.msg_id)
                break
            except FabricError as exc:  # the uplink is down or the hub is electing a leader
                now = time.monotonic()
                if not self._failing_since:  # once per outage, not once per message
                    self._failing_since = now
                    log.info("site %s: the hub did not store %s (%s); trying again",
                             self.site, d.msg_id or subject, exc)  # fmt: skip
                self.retries += 1
                if now - touched > ACK_WAIT_S / 3:  # still ours: not delivered to another
                    with contextlib.suppress(FabricError):
                        await d.in_progress()
                    touched = now
                await asyncio.sleep(pause)
                pause = min(RETRY_MAX_S, pause * 2)
        if self._failing_since:
            log.info("site %s: forwarding again after %.1f s", self.site,
                     time.monotonic() - self._failing_since)  # fmt: skip
            self._failing_since = 0.0
        self.forwarded += 1
        with contextlib.suppress(FabricError):  # a lost ack: forwarded again, dropped by id
            await d.ack()
