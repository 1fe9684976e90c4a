"""Live sensor readings for the console's charts.

The controller listens on ``sensors.>`` (the subjects the NATS MQTT gateway gives the
sensors' MQTT topics ``sensors/<node>/<location>/<type>``) and keeps the newest
:data:`POINTS` readings of each sensor in memory: a small, bounded window for the charts,
not a store (the nodes keep the readings). Listening starts with the first console page
that asks for readings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fades.controller.service import Controller

log = logging.getLogger("fades.console")

#: readings kept per sensor (the newest)
POINTS = 120
#: sensors kept in all (the ones heard of first; later ones are not charted)
MAX_SENSORS = 500

Key = tuple[str, str, str]  # node, location, sensor type


class SensorFeed:
    """The newest readings of each sensor heard on the fabric."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.series: dict[Key, deque[tuple[float, float]]] = {}
        self.units: dict[Key, str] = {}
        self._started: object = None
        self._lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        """Subscribe once per fabric connection (a restarted controller has a new bus)."""
        async with self._lock:
            bus = self.controller.bus
            if self._started is bus:
                return
            await bus.subscribe("sensors.>", self._on_reading)
            self._started = bus

    async def _on_reading(self, subject: str, data: bytes) -> None:
        parts = subject.split(".")
        if len(parts) != 4:
            return
        key: Key = (parts[1], parts[2], parts[3])
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return
        value: Any = obj.get("value") if isinstance(obj, dict) else obj
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        if not math.isfinite(value):
            return
        ts = obj.get("ts") if isinstance(obj, dict) else None
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            ts = time.time()
        points = self.series.get(key)
        if points is None:
            if len(self.series) >= MAX_SENSORS:
                return
            points = self.series[key] = deque(maxlen=POINTS)
        points.append((float(ts), float(value)))
        unit = obj.get("unit") if isinstance(obj, dict) else None
        if isinstance(unit, str):
            self.units[key] = unit[:16]

    def snapshot(self, allowed: Callable[[Key], bool]) -> list[dict[str, Any]]:
        """The readings of every sensor ``allowed`` lets this tenant see, grouped by node,
        location and type."""
        out = []
        for key in sorted(self.series):
            if not allowed(key):
                continue
            node, location, sensor_type = key
            points = list(self.series[key])
            out.append(
                {
                    "node": node,
                    "location": location,
                    "type": sensor_type,
                    "unit": self.units.get(key, ""),
                    "points": [[round(t, 1), round(v, 3)] for t, v in points],
                }
            )
        return out
