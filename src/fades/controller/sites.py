"""Sites seen by the controller: the hub streams source what each site sends up.

Each node at a site puts ``site`` in its registry entry. When a site first appears, the
controller adds the site's ``FADES_UP`` stream (in the site's JetStream domain) as a source
of the hub streams that hold what sites send up (``FADES_RESULTS``, ``FADES_PEVENTS``), with
a subject transform back to the original subject (:mod:`fades.fabric.upstream`).

A source whose site was unreachable retries with a growing backoff (about 40 s after a hub
restart, measured), which would hold a site's backlog back long after its link returned.
So when a site's heartbeat comes back after a gap, the controller removes the source and adds
it again, starting from a little before the gap (:data:`REWIND_S`): what was forwarded
before the gap and is sent again is dropped by the hub stream's message-id de-duplication,
and anything older than its window by the controller's first-outcome-wins.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from typing import Any

from nats.js.errors import NotFoundError

from fades.bus.nats import NatsBus
from fades.bus.nats_stores import OP_TIMEOUT_S
from fades.controller.registry import Registry
from fades.fabric.subjects import RESULTS_STREAM
from fades.fabric.upstream import site_source, source_site
from fades.pipelines.protocol import EVENTS_STREAM

log = logging.getLogger("fades.controller")

#: hub streams that source each site, and the subjects each takes from it
SOURCED: dict[str, list[str]] = {
    RESULTS_STREAM: ["fades.result.>"],
    EVENTS_STREAM: ["fades.pevent.>"],
}
#: a re-added source starts this many seconds before the site's last heartbeat before a gap
REWIND_S = 30.0
#: how often the registry is checked for new sites and gaps
CHECK_S = 0.5


class SiteSources:
    """Keeps the hub streams' sources in step with the sites in the registry.

    Args:
        bus: the controller's bus (on the hub).
        registry: the node registry (entries carry ``site``).
        readd: re-add a site's sources when its heartbeat returns after a gap (default: yes,
            unless ``FADES_SITE_READD=0``, which exists to measure what the re-add saves).
    """

    def __init__(self, bus: NatsBus, registry: Registry, *, readd: bool | None = None) -> None:
        self.bus = bus
        self.registry = registry
        if readd is None:
            readd = os.environ.get("FADES_SITE_READD", "1").strip() not in ("0", "false", "no")
        self.readd = readd
        #: site -> controller time of its newest heartbeat seen
        self.seen: dict[str, float] = {}
        #: (site, stream) pairs sourced
        self.sourced: set[tuple[str, str]] = set()
        #: counters: sources added, re-added after a gap
        self.stats = {"added": 0, "readded": 0}

    def sites(self) -> dict[str, tuple[float, float]]:
        """site -> (newest heartbeat seen, the shortest heartbeat interval of its nodes)."""
        out: dict[str, tuple[float, float]] = {}
        for entry in self.registry.nodes.values():
            site = entry.info.site
            if not site:
                continue
            seen, beat = out.get(site, (0.0, entry.info.heartbeat_s))
            out[site] = (max(seen, entry.seen_at), min(beat, entry.info.heartbeat_s))
        return out

    async def check(self) -> None:
        """Add sources for new sites; re-add those of sites back after a gap."""
        for site, (seen, beat) in self.sites().items():
            prev = self.seen.get(site)
            gap = max(3.0, 2.5 * beat)
            if prev is not None and seen - prev > gap and self.readd:
                log.info("site %s is back after %.1f s: re-adding its sources", site, seen - prev)
                await self.ensure(site, since=prev - REWIND_S, readd=True)
            elif any((site, s) not in self.sourced for s in SOURCED):
                await self.ensure(site)
            self.seen[site] = seen

    async def ensure(self, site: str, *, since: float | None = None, readd: bool = False) -> None:
        """Make every hub stream of :data:`SOURCED` source ``site`` (re-added if ``readd``)."""
        for stream, subjects in SOURCED.items():
            if (site, stream) in self.sourced and not readd:
                continue
            try:
                info: Any = await asyncio.wait_for(self.bus.js.stream_info(stream), OP_TIMEOUT_S)
            except NotFoundError:
                continue  # not created yet (pipelines not started): tried again next check
            cfg = info.config
            current = list(cfg.sources or [])
            others = [s for s in current if source_site(s) != site]
            if len(others) < len(current) and not readd:
                self.sourced.add((site, stream))
                continue
            if len(others) < len(current):
                cfg.sources = others or None
                await asyncio.wait_for(self.bus.js.update_stream(cfg), OP_TIMEOUT_S)
            src = site_source(site, subjects)
            if since is not None:
                src.opt_start_time = dt.datetime.fromtimestamp(since, dt.UTC)
            cfg.sources = [*others, src]
            await asyncio.wait_for(self.bus.js.update_stream(cfg), OP_TIMEOUT_S)
            self.sourced.add((site, stream))
            self.stats["readded" if readd else "added"] += 1
            log.info("%s sources site %s%s", stream, site, " (re-added)" if readd else "")

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.check()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning("site sources not updated (%d): %r", failures, exc)
            await asyncio.sleep(CHECK_S)
