"""The node registry: a live view of the ``fades_nodes`` bucket.

Node agents re-put their :class:`~fades.fabric.protocol.NodeInfo` on every heartbeat. The
registry watches the bucket and marks a node **down** when

* it put ``stopping: true`` (a clean stop): down at once, or
* no new heartbeat was seen for ``down_after`` seconds (default 10).

``up`` is computed when asked, so a node is reported down at most ``down_after`` seconds after
its last heartbeat, never later. A heartbeat seen live is stamped with the controller's clock
(node clocks may drift); entries read when the watch (re)starts are stamped with the
heartbeat time the node wrote in them (never later than now), so after a controller restart
a node that died meanwhile is not revived.

The bucket lives in JetStream (file storage), so a restarted controller rebuilds the same
view from it. While the controller itself is cut off from NATS it sees no heartbeats either, so
after ``down_after`` its nodes count as down and new tasks are refused, not queued blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fades.aiostop import cancel_all, wait_for
from fades.bus.base import KeyValue, KvEntry
from fades.controller.models import NodeView
from fades.errors import FabricError
from fades.fabric.protocol import NodeInfo

log = logging.getLogger("fades.controller")

#: default seconds without a heartbeat before a node is marked down
DOWN_AFTER_S = 10.0


@dataclass(slots=True)
class NodeEntry:
    """The newest registry value of one node and when the controller saw it change."""

    info: NodeInfo
    seen_at: float  # epoch seconds

    def age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.seen_at)

    def down_reason(self, down_after: float, now: float | None = None) -> str | None:
        """Why the node is down, or None if it is up."""
        if self.info.stopping:
            return "stopped cleanly (stopping: true)"
        age = self.age(now)
        if age > down_after:
            return f"no heartbeat for {age:.1f} s (down after {down_after:g} s)"
        return None


class Registry:
    """Watches the node bucket; answers which nodes exist and which are up.

    Args:
        kv: the ``fades_nodes`` bucket.
        down_after: seconds without a heartbeat before a node counts as down.
        reconnects: the connection's reconnect count; the watch restarts when it changes.
    """

    def __init__(
        self,
        kv: KeyValue,
        down_after: float = DOWN_AFTER_S,
        reconnects: Callable[[], int] | None = None,
    ) -> None:
        if not down_after > 0:
            raise ValueError(f"down_after must be a positive number of seconds, not {down_after!r}")
        self.kv = kv
        self._reconnects = reconnects or (lambda: 0)
        self.down_after = down_after
        self.nodes: dict[str, NodeEntry] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._was_up: dict[str, bool] = {}

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self, timeout: float = 5.0) -> None:
        """Start watching and wait (up to ``timeout``) until the current entries are read."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fades-registry")
        with contextlib.suppress(TimeoutError):
            await wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_all([task])

    # --- queries -----------------------------------------------------------------------------
    def get(self, name: str) -> NodeEntry | None:
        return self.nodes.get(name)

    def is_up(self, name: str, now: float | None = None) -> bool:
        entry = self.nodes.get(name)
        return entry is not None and entry.down_reason(self.down_after, now) is None

    def up(self, now: float | None = None) -> list[NodeEntry]:
        """Nodes that are up, by name."""
        now = time.time() if now is None else now
        return [e for _, e in sorted(self.nodes.items()) if self.is_up(e.info.name, now)]

    def down(self, now: float | None = None) -> list[NodeEntry]:
        now = time.time() if now is None else now
        return [e for _, e in sorted(self.nodes.items()) if not self.is_up(e.info.name, now)]

    def views(self, now: float | None = None) -> list[NodeView]:
        """Every registered node, up or down, by name, as the API shows it."""
        now = time.time() if now is None else now
        out = []
        for name, entry in sorted(self.nodes.items()):
            info = entry.info
            reason = entry.down_reason(self.down_after, now)
            load = info.load.model_dump()
            load["score"] = info.load.score
            out.append(
                NodeView(
                    name=name,
                    up=reason is None,
                    down_reason=reason,
                    heartbeat_age_s=round(entry.age(now), 3),
                    load=load,
                    data=[d.model_dump() for d in info.data],
                    labels=info.labels,
                    runtimes=info.runtimes,
                    arch=info.arch,
                    cores=info.cores,
                    memory_mib=info.memory_mib,
                    version=info.version,
                    seq=info.seq,
                    stats=info.stats,
                )
            )
        return out

    # --- watching ----------------------------------------------------------------------------
    def apply(self, key: str, value: bytes | None, *, live: bool) -> None:
        """Record one bucket update (``value`` None: the key was deleted)."""
        now = time.time()
        if value is None:
            if self.nodes.pop(key, None) is not None:
                log.info("node %s left the registry", key)
            return
        try:
            info = NodeInfo.decode(value)
        except FabricError as exc:
            log.warning("registry entry %s ignored: %s", key, exc)
            return
        old = self.nodes.get(key)
        if old is not None and (old.info.seq, old.info.started_at) == (info.seq, info.started_at):
            old.info = info  # the same heartbeat delivered again (watch restarted)
            return
        written = info.heartbeat_at if info.heartbeat_at > 0 else now
        stamp = now if live else min(now, written)
        self.nodes[key] = NodeEntry(info, stamp)
        if old is None:
            log.info("node %s registered (%s, %d cores)", key, info.arch or "?", info.cores)

    def _log_transitions(self) -> None:
        now = time.time()
        for name, entry in self.nodes.items():
            reason = entry.down_reason(self.down_after, now)
            up = reason is None
            if self._was_up.get(name) != up:
                if up:
                    log.info("node %s is up", name)
                elif name in self._was_up:
                    log.warning("node %s is down: %s", name, reason)
                self._was_up[name] = up

    async def _pump(self, queue: asyncio.Queue[KvEntry | None]) -> None:
        async for entry in self.kv.watch():
            await queue.put(entry)

    async def _run(self) -> None:
        # The watch is restarted when it fails, after a reconnect, or when it goes quiet for
        # longer than a node may: a watch does not always survive a NATS restart.
        quiet_limit = max(1.0, self.down_after / 2)
        while True:
            queue: asyncio.Queue[KvEntry | None] = asyncio.Queue()
            pump = asyncio.create_task(self._pump(queue), name="fades-registry-watch")
            try:
                reconnects = self._reconnects()
                initial = True
                last_update = time.monotonic()
                while True:
                    self._log_transitions()
                    if pump.done():
                        pump.result()  # raises why the watch ended
                        break
                    try:
                        entry = await wait_for(queue.get(), 0.5)
                    except TimeoutError:
                        quiet = time.monotonic() - last_update
                        if (initial or self.nodes) and quiet > quiet_limit:
                            break  # restart the watch and re-read the bucket
                        if self._reconnects() != reconnects:
                            break  # NATS came back (maybe restarted): a fresh watch
                        continue
                    if entry is None:  # end of the initial values
                        initial = False
                        self._ready.set()
                        continue
                    last_update = time.monotonic()
                    self.apply(entry.key, entry.value or None, live=not initial)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a fabric outage: retry the watch shortly
                log.debug("registry watch failed: %s; restarting it", exc)
                await asyncio.sleep(0.5)
            finally:
                pump.cancel()  # its watch closes as the generator unwinds
