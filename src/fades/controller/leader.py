"""Which controller does the duties that must run once: a lease in a KV bucket.

Several controllers may serve one cluster. Most of their work is shared safely through the
controller log (:mod:`fades.controller.replica`), but a few background duties must run on one
of them only: re-publishing accepted tasks nobody handed over, re-running cloud tasks
interrupted by a restart, and moving stateful tasks off a node that went down. The controller
holding the key ``controller`` in the bucket ``fades_leader`` does them.

The holder re-writes the key every :data:`RENEW_S` with a compare-and-set on the revision it
last wrote; the bucket's entries expire :data:`LEASE_S` after their last write, so when the
holder dies another controller creates the key within about ``LEASE_S`` + ``RENEW_S``
seconds. A holder whose compare-and-set fails (someone else holds the key now) steps down
at once. A controller stopping cleanly deletes the key so the next one takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fades.aiostop import cancel_all, wait_for
from fades.errors import FabricConflict

log = logging.getLogger("fades.controller")

LEADER_BUCKET = "fades_leader"
LEADER_KEY = "controller"
#: seconds the lease lasts after its last renewal
LEASE_S = 4.0
#: seconds between renewals (and between attempts to take the lease)
RENEW_S = 1.0


class Leadership:
    """Holds or waits for the lease; :attr:`is_leader` says which."""

    def __init__(self, bus: Any, me: str, on_elected: Callable[[], None] | None = None) -> None:
        self.bus = bus
        self.me = me
        self.on_elected = on_elected
        self.is_leader = False
        self._kv: Any = None
        self._revision = 0
        self._renewed = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._kv = await self.bus.kv(LEADER_BUCKET, ttl=LEASE_S)
        await self._step()
        self._task = asyncio.create_task(self._run(), name="fades-leader")

    async def stop(self) -> None:
        await cancel_all([self._task])
        self._task = None
        if self.is_leader and self._kv is not None:
            self.is_leader = False
            with contextlib.suppress(Exception):
                cur = await wait_for(self._kv.get(LEADER_KEY), 2.0)
                if cur is not None and cur.value.decode() == self.me:
                    await wait_for(self._kv.delete(LEADER_KEY), 2.0)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            await self._step()

    async def _step(self) -> None:
        kv = self._kv
        me = self.me.encode()
        if self.is_leader and time.monotonic() - self._renewed > LEASE_S - RENEW_S:
            log.warning("controller %s: lead lost (the lease could not be renewed)", self.me)
            self.is_leader = False
        try:
            if self.is_leader:
                self._revision = await wait_for(kv.update(LEADER_KEY, me, self._revision), RENEW_S)
                self._renewed = time.monotonic()
                return
            cur = await wait_for(kv.get(LEADER_KEY), 5.0)
            if cur is not None and cur.value != me:
                return
            if cur is None:
                self._revision = await wait_for(kv.create(LEADER_KEY, me), 5.0)
            else:  # ours from before a restart
                self._revision = await wait_for(kv.update(LEADER_KEY, me, cur.revision), 5.0)
            self._renewed = time.monotonic()
        except FabricConflict:
            if self.is_leader:
                log.warning("controller %s: another controller holds the lead now", self.me)
            self.is_leader = False
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the fabric is unreachable: the lease will lapse
            log.debug("leader lease: %r", exc)
            return
        if not self.is_leader:
            self.is_leader = True
            log.info("controller %s leads (background duties run here)", self.me)
            if self.on_elected is not None:
                try:
                    self.on_elected()
                except Exception:
                    log.exception("taking the lead failed")


async def while_leading(leads: Callable[[], bool], job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job()`` while ``leads()``; cancel it when the lead is lost, start it again when
    it comes back (until cancelled)."""
    while True:
        if not leads():
            await asyncio.sleep(0.5)
            continue
        task = asyncio.ensure_future(job())
        try:
            while leads() and not task.done():
                await asyncio.sleep(0.5)
        finally:
            await cancel_all([task])
