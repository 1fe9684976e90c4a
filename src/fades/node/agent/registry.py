"""Registry and heartbeat: the node's entry in the ``fades_nodes`` bucket.

The entry (:class:`~fades.fabric.protocol.NodeInfo`: what the node offers, the data it holds,
how loaded it is, the site it is at) is re-put every ``heartbeat_s``; ``stopping: true`` on
a clean stop. The data summary is refreshed every :data:`DATA_EVERY` beats, and sooner after
ingest wrote readings when describing the data is cheap. After a fabric reconnect the streams
are checked again (a server may come back without its store), and every beat sweeps the
result outbox.
A heartbeat that fails (a site whose uplink is cut) is logged once per outage; each put is
bounded by the bus's operation timeout, so the loop keeps its pace.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from typing import TYPE_CHECKING, Any

from fades import __version__
from fades.aiostop import wait_for
from fades.bus.base import KeyValue
from fades.errors import FadesError, NodeNameInUse
from fades.fabric.protocol import DataHeld, NodeInfo, NodeLoad
from fades.fabric.streams import nodes_bucket
from fades.node.entryfit import fit_entry

if TYPE_CHECKING:
    from fades.node.agent import NodeAgent

log = logging.getLogger("fades.node.agent")

#: the data summary is refreshed at least every this many heartbeats
DATA_EVERY = 5
#: a starting node watches a fresh entry under its name for this many of that entry's
#: heartbeats (plus a second) before it takes the name; renewed meanwhile: the name is in use
CLAIM_BEATS = 3
#: ... but never longer than this many seconds (or one of its heartbeats and a second, if
#: that is longer)
CLAIM_MAX_S = 30.0


def memory_mib() -> int:
    """Total memory of this machine in MiB (0 if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return 0


class Registry:
    """Puts the node's registry entry, once per heartbeat."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.seq = 0
        self._kv: KeyValue | None = None
        self._data: list[DataHeld] = []
        self._data_beat = -DATA_EVERY
        self._ingest_written: Any = None
        self._describe_s = 0.0
        self._reconnects = 0

    def info(self) -> NodeInfo:
        """The registry entry as of now (without bumping ``seq``)."""
        a = self.agent
        load = NodeLoad(capacity=a.capacity or 1)
        if a.node is not None:
            orc = a.node.orchestrator
            current = orc.load
            load = NodeLoad(
                running=current["running"], queued=current["queued"], capacity=orc.capacity
            )
        stats = dict(a.ingest.stats)
        return NodeInfo(
            name=a.name,
            version=__version__,
            arch=platform.machine(),
            cores=os.cpu_count() or 1,
            memory_mib=memory_mib(),
            runtimes=["python", "core"],
            labels=a.labels,
            data=list(self._data),
            load=load,
            started_at=a.started_at,
            heartbeat_at=time.time(),
            heartbeat_s=a.heartbeat_s,
            seq=self.seq,
            stopping=a.stopping,
            stats=stats,
            trusted_signers=a.node.trust.ids() if a.node is not None else None,
            devices=a.devices,
            site=a.site,
        )

    async def claim_name(self) -> None:
        """Refuse to start under the name of a node that is still running.

        An entry under this name that is not ``stopping`` is either a node that runs or one
        that was killed. It is watched for :data:`CLAIM_BEATS` of its heartbeats: renewed
        meanwhile, the name is in use; silent, its holder is gone.

        Raises:
            NodeNameInUse: another node agent is running under this name.
        """
        a = self.agent
        kv = await self._bucket()
        first = await kv.get(a.name)
        if first is None or not first.value:
            return
        try:
            held = NodeInfo.decode(first.value)
        except Exception:  # an unreadable entry: ours to overwrite
            return
        if held.stopping:
            return
        # watched whatever its age says: its heartbeat time is the other host's clock
        beat = max(held.heartbeat_s, 0.05)
        window = min(max(CLAIM_MAX_S, beat + 1.0), CLAIM_BEATS * beat + 1.0)
        log.info(
            "node %s: an entry under this name is not marked stopped; watching it for %.1f s "
            "before taking the name",
            a.name,
            window,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        while loop.time() < deadline:
            await asyncio.sleep(min(beat / 2, 0.5))
            now = await kv.get(a.name)
            if now is None or now.revision == first.revision:
                continue
            try:
                renewed = NodeInfo.decode(now.value) if now.value else None
            except Exception:
                renewed = None
            if renewed is None or renewed.stopping:
                return  # it stopped meanwhile
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(renewed.started_at))
            raise NodeNameInUse(
                f"node {a.name} is already running (started {started}, heartbeat every "
                f"{renewed.heartbeat_s:g} s, still renewing its entry); stop it, or start "
                "this one under another --name"
            )

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await nodes_bucket(self.agent.require_bus())
        return self._kv

    async def refresh_data(self) -> None:
        t0 = time.perf_counter()
        try:
            described = await asyncio.to_thread(self.agent.require_node().broker.describe)
            self._data = DataHeld.from_broker(described)
        except FadesError as exc:
            log.warning("node %s: cannot describe its data: %s", self.agent.name, exc)
        self._describe_s = time.perf_counter() - t0
        self._data_beat = self.seq

    async def beat(self) -> None:
        """Put the registry entry (seq + 1), refreshing the data summary when due."""
        written = self.agent.ingest.stats.get("written")
        due = self.seq - self._data_beat >= DATA_EVERY
        cheap = self._describe_s <= self.agent.heartbeat_s / 4
        if due or (written != self._ingest_written and cheap):
            self._ingest_written = written
            await self.refresh_data()
        self.seq += 1
        entry, left_out = fit_entry(self.info())
        if left_out and self.seq % 60 == 1:
            log.warning("node %s: entry too big: %d data lines left out", self.agent.name, left_out)
        try:
            await (await self._bucket()).put(self.agent.name, entry)
        except Exception:
            self._kv = None  # re-open the bucket next time (the server may have restarted)
            raise

    async def last_beat(self) -> None:
        """A final put (``stopping``), if the fabric takes it."""
        if self.agent.bus is None or not getattr(self.agent.bus, "connected", True):
            return
        try:
            await wait_for(self.beat(), 10.0)
        except Exception as exc:
            log.warning("node %s: could not put its stopping entry: %r", self.agent.name, exc)

    async def loop(self) -> None:
        a = self.agent
        self._reconnects = getattr(a.bus, "reconnects", 0)
        failures = 0
        while not a.stopping:
            await asyncio.sleep(a.heartbeat_s)
            reconnects = getattr(a.bus, "reconnects", 0)
            if reconnects != self._reconnects:
                self._reconnects = reconnects
                log.info("node %s: reconnected to the fabric; re-checking streams", a.name)
                try:
                    await a.open_fabric()  # re-created if the server came back without its store
                except Exception as exc:
                    log.warning("node %s: streams not re-checked: %r", a.name, exc)
            try:
                await self.beat()
                if failures:
                    log.info("node %s: heartbeat resumed after %d failures", a.name, failures)
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1:  # once per outage (the resume is logged too)
                    log.warning("node %s: heartbeat failed (hub unreachable?): %s", a.name, exc)
                continue
            await a.outbox.sweep()
