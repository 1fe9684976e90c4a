"""MQTT sensor ingest: readings published by sensors (through the fabric's MQTT gateway)
are written into the node's readings database by :mod:`fades.sensors.ingest`.

The ingestor subscribes through the agent's :class:`~fades.bus.base.Bus`, so ingest runs
over any bus (NATS, or :class:`~fades.bus.memory.MemoryBus` in tests).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from fades.aiostop import wait_for

if TYPE_CHECKING:
    from fades.node.agent import NodeAgent
    from fades.sensors.ingest import Ingestor

log = logging.getLogger("fades.node.agent")


class Ingest:
    """Starts and stops the sensor ingestor of one agent."""

    def __init__(self, agent: NodeAgent, enabled: bool) -> None:
        self.agent = agent
        self.enabled = enabled
        self.ingestor: Ingestor | None = None

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self.ingestor.stats) if self.ingestor is not None else {}

    async def start(self) -> None:
        a = self.agent
        if not self.enabled:
            return
        try:
            from fades.sensors.ingest import Ingestor
        except ImportError:
            log.info("node %s: sensor ingest is not available (fades.sensors.ingest)", a.name)
            return
        ingestor = Ingestor(a.require_bus(), a.require_node().readings, a.name)
        try:
            await ingestor.start()
        except Exception as exc:
            log.warning("node %s: sensor ingest did not start: %s", a.name, exc)
            return
        self.ingestor = ingestor

    async def stop(self, timeout: float = 10.0) -> None:
        ingestor, self.ingestor = self.ingestor, None
        if ingestor is None:
            return
        try:
            await wait_for(ingestor.stop(), timeout)
        except Exception as exc:
            with contextlib.suppress(Exception):
                log.warning("node %s: ingest did not stop cleanly: %s", self.agent.name, exc)
