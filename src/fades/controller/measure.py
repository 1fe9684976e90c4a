"""What the controller measures for the Nimbus placer: RTT, bandwidth, load and queue models.

* **RTT**: a ping (``fades.node.<name>.ping``, answered with the node's registry entry) to
  every up node every :data:`PING_EVERY_S` seconds, at most :data:`PING_CONCURRENCY` at a
  time. Smoothed as TCP does (RFC 6298): ``srtt += (sample - srtt)/8``, jitter (mean
  deviation) ``+= (|sample - srtt| - jitter)/4``. :data:`LOST_AFTER` pings in a row without
  an answer make the node unreachable for the placer until one is answered.
* **Bandwidth** (controller -> node): every :data:`PROBE_EVERY`-th round a ping carrying
  :data:`PROBE_BYTES` of padding follows the plain one at once; the least padded RTT minus
  the least plain RTT over the last :data:`PROBES` rounds gives the rate (least, because a
  busy node or a loaded machine only ever adds time). Under 0.5 ms extra the link counts
  as fast (the default). A node label ``bandwidth_mbps`` overrides it.
* **Load**: the controller counts the tasks it placed on each site and has no outcome for
  yet (lost ones expire); the ping's registry entry adds tasks from elsewhere.
* **Queue model**, per site, the Nimbus one: the wait a task saw at the site (the outcome's
  ``queue`` timing) against the tasks at the site when it was placed (``c``, itself
  included), ``wait = slope*c + intercept`` fit by least squares over the last
  :data:`WINDOW` outcomes. Until :data:`MIN_FIT` outcomes with at least 3 different ``c``
  are in, or when the fit has no positive slope, the prior of ``k`` FIFO workers with the
  smoothed service time ``S`` is used (``slope = S/k``, ``intercept = -S``). Linear because
  the Nimbus measurements found queue time linear in the client count and a pool of ``k``
  workers is linear past ``k``; M/M/c would assume Poisson arrivals and exponential
  service times, which a stream of similar tasks does not have.
* **Path time**: what a task's trip to the site and back costs beyond the wait, the run and
  its input's transfer (the fabric's dispatch and result delivery, which a ping does not
  see): ``now - placed - wait - total - input bytes / bandwidth`` per outcome, weighted
  mean (1/4). The placer uses the larger of it and the smoothed RTT.
* **Compute time**: an exponentially weighted mean (weight 1/4) of the outcome's ``total``
  (fetch + sandbox, without the wait) per site and function, for up to
  :data:`MAX_FUNCTIONS` functions per site.

All of it is bounded: per node a few numbers and a window of :data:`WINDOW` samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fades.bus.base import Bus
from fades.fabric.protocol import NodeInfo
from fades.fabric.subjects import ping_subject
from fades.outcome import Outcome
from fades.placers.estimates import (
    DEFAULT_BANDWIDTH_MBPS,
    DEFAULT_COMPUTE_MS,
    DEFAULT_RTT_MS,
    NodeEstimate,
    fluid_queue,
    label_ms,
)

log = logging.getLogger("fades.controller")

PING_EVERY_S = 3.0
PING_TIMEOUT_S = 2.0
PING_CONCURRENCY = 16
LOST_AFTER = 3
PROBE_EVERY = 2
PROBE_BYTES = 16 * 1024
PROBES = 8
WINDOW = 64
MIN_FIT = 8
MAX_FUNCTIONS = 64
#: a placed task with no outcome after this long no longer counts as load
INFLIGHT_EXPIRY_S = 120.0
#: most placed-but-unfinished tasks tracked (the oldest are forgotten first)
MAX_INFLIGHT = 100_000


@dataclass(slots=True)
class SiteStats:
    """What is known of one site (a node, or ``cloud``)."""

    srtt_ms: float | None = None
    jitter_ms: float = 0.0
    pings: int = 0
    lost: int = 0
    last_answer: float = 0.0
    bandwidth_mbps: float | None = None
    last_ms: float | None = None  # the last plain ping's RTT
    path_ms: float | None = None  # dispatch + result delivery, from outcomes
    probes: deque[float] = field(default_factory=lambda: deque(maxlen=PROBES))
    plain: deque[float] = field(default_factory=lambda: deque(maxlen=PROBES))
    load: int = 0
    load_at: float = 0.0
    last_outcome: float = 0.0
    service_ms: dict[str, float] = field(default_factory=dict)
    waits: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=WINDOW))
    fitted: tuple[float, float] | None = None  # fit() as of the last outcome
    stale: bool = False  # an outcome came since ``fitted`` (refitted when read)

    def rtt_sample(self, ms: float) -> None:
        self.last_ms = ms
        self.plain.append(ms)
        self.pings += 1
        self.lost = 0
        self.last_answer = time.time()
        if self.srtt_ms is None:
            self.srtt_ms, self.jitter_ms = ms, ms / 2
        else:
            self.jitter_ms += (abs(ms - self.srtt_ms) - self.jitter_ms) / 4
            self.srtt_ms += (ms - self.srtt_ms) / 8

    def service(self, artifact: str) -> float | None:
        if artifact in self.service_ms:
            return self.service_ms[artifact]
        if self.service_ms:
            return sum(self.service_ms.values()) / len(self.service_ms)
        return None

    def fit(self) -> tuple[float, float] | None:
        """``(slope, intercept)`` by least squares, or None (too few or no positive slope)."""
        if len(self.waits) < MIN_FIT or len({c for c, _ in self.waits}) < 3:
            return None
        n = len(self.waits)
        mc = sum(c for c, _ in self.waits) / n
        mw = sum(w for _, w in self.waits) / n
        var = sum((c - mc) ** 2 for c, _ in self.waits)
        slope = sum((c - mc) * (w - mw) for c, w in self.waits) / var
        return (slope, mw - slope * mc) if slope > 0 else None


class Measurements:
    """The controller's live figures; an :class:`~fades.placers.estimates.Estimates` source.

    Args:
        cloud_workers: the cloud runner's capacity (0: no cloud offered).
        ping_every_s: seconds between two pings of a node.
    """

    def __init__(self, cloud_workers: int = 0, ping_every_s: float = PING_EVERY_S) -> None:
        if not ping_every_s > 0:
            raise ValueError(f"ping_every_s must be > 0, not {ping_every_s!r}")
        self.cloud_workers = cloud_workers
        self.ping_every_s = ping_every_s
        self.sites: dict[str, SiteStats] = {}
        #: (tenant, task id) -> (site, placed at, tasks at the site then (itself included),
        #: input bytes)
        self.inflight: dict[tuple[str, str], tuple[str, float, int, int]] = {}
        self.count: dict[str, int] = {}
        self._swept = 0.0
        self._round = 0

    def site(self, name: str) -> SiteStats:
        s = self.sites.get(name)
        if s is None:
            s = self.sites[name] = SiteStats()
        return s

    # --- load and outcomes -------------------------------------------------------------------
    def placed(self, site: str, tenant: str, task_id: str, nbytes: int = 0) -> None:
        """A task carrying ``nbytes`` of input was placed on ``site`` (a node or ``cloud``)."""
        now = time.time()
        self._sweep(now)
        if (tenant, task_id) in self.inflight:
            return
        while len(self.inflight) >= MAX_INFLIGHT:
            self._forget(next(iter(self.inflight)))
        n = self.count.get(site, 0) + 1
        self.count[site] = n
        self.inflight[(tenant, task_id)] = (site, now, max(n, self.site(site).load + 1), nbytes)

    def observe(self, out: Outcome) -> None:
        """An outcome was stored: the task leaves its site's load; a finished one teaches
        the site's compute time and queue model."""
        entry = self._forget((out.tenant, out.task_id))
        site = entry[0] if entry is not None else out.node
        s = self.site(site)
        s.last_outcome = time.time()
        if out.status != "done":
            return
        total = out.timing.get("total")
        if total is not None and total >= 0:
            art = out.digest or ""
            old = s.service_ms.get(art)
            ms = total * 1000.0
            if old is None and len(s.service_ms) >= MAX_FUNCTIONS:
                s.service_ms.pop(next(iter(s.service_ms)))
            s.service_ms[art] = ms if old is None else old + (ms - old) / 4
        wait = out.timing.get("queue")
        if entry is not None and wait is not None and wait >= 0:
            s.waits.append((entry[2], wait * 1000.0))
            if total is not None:
                bw = s.bandwidth_mbps or DEFAULT_BANDWIDTH_MBPS
                sent = entry[3] * 8 / (bw * 1000.0) if site != "cloud" else 0.0
                path = (time.time() - entry[1] - wait - total) * 1000.0 - sent
                path = max(0.0, path)
                s.path_ms = path if s.path_ms is None else s.path_ms + (path - s.path_ms) / 4
            s.stale = True  # refitted when an estimate reads it, not per outcome

    def _forget(self, key: tuple[str, str]) -> tuple[str, float, int, int] | None:
        entry = self.inflight.pop(key, None)
        if entry is not None:
            self.count[entry[0]] = max(0, self.count.get(entry[0], 1) - 1)
        return entry

    def _sweep(self, now: float) -> None:
        if now - self._swept < 1.0:
            return
        self._swept = now
        for key in [k for k, v in self.inflight.items() if now - v[1] > INFLIGHT_EXPIRY_S]:
            self._forget(key)

    # --- the Estimates interface -------------------------------------------------------------
    def _estimate(
        self, name: str, workers: int, artifact: str, rtt: float, bw: float, compute: float
    ) -> NodeEstimate:
        s = self.sites.get(name) or SiteStats()
        inflight = self.count.get(name, 0)
        fresh_load = s.load if s.load_at >= s.last_outcome else 0
        service = s.service(artifact)
        compute = service if service is not None else compute
        if s.stale:
            s.fitted, s.stale = s.fit(), False
        fit = s.fitted
        slope, intercept = fit if fit is not None else fluid_queue(compute, workers)
        measured = s.srtt_ms is not None or service is not None
        if s.srtt_ms is not None:
            rtt = s.srtt_ms
        if s.path_ms is not None:
            rtt = max(rtt, s.path_ms)
        unreachable = None
        if s.lost >= LOST_AFTER:
            unreachable = f"no answer to {s.lost} pings in a row"
        return NodeEstimate(
            rtt_ms=rtt,
            bandwidth_mbps=bw,
            compute_ms=compute,
            slope_ms=slope,
            intercept_ms=intercept,
            clients=max(inflight, fresh_load),
            workers=workers,
            jitter_ms=s.jitter_ms,
            source=("measured" if measured else "prior") + (", fitted queue" if fit else ""),
            unreachable=unreachable,
        )

    def node(self, info: NodeInfo, artifact: str) -> NodeEstimate:
        s = self.site(info.name)
        bw = label_ms(info, "bandwidth_mbps", 0.0) or s.bandwidth_mbps or DEFAULT_BANDWIDTH_MBPS
        rtt = label_ms(info, "rtt_ms", DEFAULT_RTT_MS)
        compute = label_ms(info, "compute_ms", DEFAULT_COMPUTE_MS)
        if info.heartbeat_at > s.load_at or not s.load_at:
            s.load = info.load.running + info.load.queued
            s.load_at = info.heartbeat_at or time.time()
        return self._estimate(info.name, max(1, info.load.capacity), artifact, rtt, bw, compute)

    def cloud(self, artifact: str) -> NodeEstimate | None:
        if self.cloud_workers <= 0:
            return None
        return self._estimate("cloud", self.cloud_workers, artifact, 0.0, 1e6, DEFAULT_COMPUTE_MS)

    # --- pinging -----------------------------------------------------------------------------
    async def ping(self, bus: Bus, name: str, probe: bool = False) -> float | None:
        """Ping ``name`` once; its RTT in ms (None: no answer). Records the sample."""
        s = self.site(name)
        payload = b"\0" * PROBE_BYTES if probe else b""
        t0 = time.perf_counter()
        try:
            reply = await bus.request(ping_subject(name), payload, timeout=PING_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            s.lost += 1
            return None
        ms = (time.perf_counter() - t0) * 1000.0
        with contextlib.suppress(Exception):
            info = NodeInfo.decode(reply)
            s.load, s.load_at = info.load.running + info.load.queued, time.time()
        if probe:
            if s.plain:
                s.probes.append(ms)
                least = min(s.probes) - min(s.plain)
                # below 0.5 ms the probe cannot tell the rate from noise: a fast link
                s.bandwidth_mbps = PROBE_BYTES * 8 / (least * 1000.0) if least > 0.5 else None
            s.lost = 0
            return ms
        s.rtt_sample(ms)
        return ms

    async def run(self, bus: Bus, names: Callable[[], list[str]]) -> None:
        """Ping every node ``names()`` lists, every ``ping_every_s``, until cancelled."""
        gate = asyncio.Semaphore(PING_CONCURRENCY)

        async def one(name: str, probe: bool) -> None:
            async with gate:
                if await self.ping(bus, name) is not None and probe:
                    await self.ping(bus, name, probe=True)

        while True:
            self._round += 1
            probe = self._round % PROBE_EVERY == 0
            started = time.monotonic()
            try:
                await asyncio.gather(*(one(n, probe) for n in names()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let measuring take the controller down
                log.debug("ping round failed: %r", exc)
            for gone in set(self.sites) - {*names(), "cloud"}:
                if gone not in self.count or not self.count[gone]:
                    self.sites.pop(gone, None)
            await asyncio.sleep(max(0.0, self.ping_every_s - (time.monotonic() - started)))
