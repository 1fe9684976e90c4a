"""Ingest a node's MQTT sensor readings from NATS into its local SQLite store.

Sensors publish to the MQTT topic ``sensors/<node>/<location>/<sensor_type>``; the NATS MQTT
gateway delivers that on the subject ``sensors.<node>.<location>.<sensor_type>``, where the
:class:`Ingestor` listens with a core subscription on ``sensors.<node>.>``. A payload is

* a JSON object ``{"ts": <epoch s>, "value": <number>, "device": "...", "unit": "..."}``;
  only ``value`` is required: ``ts`` defaults to the arrival time, ``device`` to
  ``<location>-<sensor_type>``, ``unit`` to the unit the store already has for that sensor
  (else the usual unit of the sensor type, :data:`fades.sensors.units.UNITS`, else ``""``);
* or a bare number (``21.5``), read at its arrival time.

Readings are buffered in the event loop and written every ``batch_s`` seconds in one
transaction, in a worker thread (SQLite never blocks the loop). A malformed reading (bad
subject, not JSON, no finite value, a unit that contradicts the stored one, ...) is counted
in ``stats["rejected"]`` with the reason in ``stats["last_error"]``; the others still land.

Every name is bounded (:data:`MAX_NAME_CHARS`, :data:`MAX_DEVICE_CHARS`, :data:`MAX_UNIT_CHARS`),
a node takes at most :data:`MAX_SENSORS` sensors (a reading of a new sensor beyond that is
rejected), a payload at most :data:`MAX_READING_BYTES` (refused before it is buffered), and
``last_error`` at most :data:`MAX_ERROR_CHARS` characters: the node's registry
entry carries these, and one huge or a flood of odd readings must not make it too big to send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from fades.aiostop import cancel_all, wait_for
from fades.errors import ConnectorError
from fades.fabric.subjects import SENSORS_PREFIX, check_token
from fades.sensors.units import UNITS

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from fades.broker.connectors.sqlite import SQLiteConnector
    from fades.bus.base import Bus

log = logging.getLogger("fades.sensors")

#: timestamps above this are taken for milliseconds and refused (year 5138 in seconds)
MAX_TS = 1e11
#: longest location or sensor type (a topic level) a reading may name
MAX_NAME_CHARS = 64
#: longest ``device`` name a reading may carry
MAX_DEVICE_CHARS = 128
#: longest ``unit`` a reading may carry
MAX_UNIT_CHARS = 32


#: sensors (sensor type, location, device) a node takes at most; a new one beyond is rejected
#: (``FADES_INGEST_MAX_SENSORS``)
def _env_count(name: str, default: int) -> int:
    """A positive whole number from the environment; a bad value is named in the log and the
    default used (a node still starts)."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
        if value < 1:
            raise ValueError
    except ValueError:
        logging.getLogger("fades").warning(
            "%s=%r is not a positive whole number; using %d", name, text, default
        )
        return default
    return value


MAX_SENSORS = _env_count("FADES_INGEST_MAX_SENSORS", 1000)
#: ``stats["last_error"]`` is cut to this many characters
MAX_ERROR_CHARS = 300
#: a reading's payload is refused above this many bytes, before it is buffered
MAX_READING_BYTES = 4096
#: payload bytes buffered at most between two writes (beside ``max_pending`` readings)
MAX_PENDING_BYTES = 32 << 20

_Raw = tuple[str, bytes, float]  # subject, payload, arrival time
_Key = tuple[str, str, str]  # sensor_type, location, device


def _short(v: object, limit: int = 80) -> str:
    """``repr(v)``, cut to ``limit`` characters."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BadReading(ValueError):
    """A reading that cannot be stored (the reason is the message)."""


class Ingestor:
    """Write the readings arriving on ``sensors.<node>.>`` into ``readings``.

    Args:
        nc: the node's :class:`~fades.bus.base.Bus` (any bus: readings arrive through its
            ``subscribe``), or a connected NATS client (subscribed directly, drained on stop).
        readings: the node's store.
        node: the node name (subject token).
        batch_s: seconds between two writes.
        max_pending: readings buffered at most between two writes; beyond that new ones are
            rejected (the store cannot keep up).
        on_write: called with the number of readings written after each write, in the
            writer thread.

    ``stats``: ``received`` (messages seen), ``written`` (readings stored), ``rejected``
    (malformed or unstorable), ``last_error`` (reason of the latest rejection, or None),
    ``batches`` (writes done).
    """

    def __init__(
        self,
        nc: Bus | NATS,
        readings: SQLiteConnector,
        node: str,
        batch_s: float = 0.2,
        *,
        max_pending: int = 200_000,
        on_write: Callable[[int], None] | None = None,
    ) -> None:
        self.nc = nc
        self.readings = readings
        self.node = check_token(node)
        self.batch_s = batch_s
        self.max_pending = max_pending
        self.on_write = on_write
        self.subject = f"{SENSORS_PREFIX}.{node}.>"
        self._prefix = f"{SENSORS_PREFIX}.{node}."
        self.stats: dict[str, Any] = {
            "received": 0,
            "written": 0,
            "rejected": 0,
            "last_error": None,
            "batches": 0,
        }
        self._pending: list[_Raw] = []
        self._pending_bytes = 0
        self._sub: Subscription | None = None
        self._listening = False  # over a Bus: readings are taken while True
        self._on_bus = False  # subscribed on the Bus (it has no unsubscribe: once only)
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._stats_lock = threading.Lock()
        self._units: dict[_Key, str] | None = None  # the store's sensors, loaded lazily

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> Ingestor:
        """Subscribe and start the periodic writer."""
        if not hasattr(self.nc, "jetstream"):  # a Bus, not a raw NATS client
            if not self._on_bus:
                await self.nc.subscribe(self.subject, self._on_reading)
                self._on_bus = True
            self._listening = True
        elif self._sub is None:
            self._sub = await cast("NATS", self.nc).subscribe(self.subject, cb=self._on_msg)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._writer(), name=f"fades-ingest-{self.node}")
        return self

    async def stop(self) -> None:
        """Unsubscribe (after handling what already arrived) and write what is buffered."""
        self._listening = False  # over a Bus: what arrives from now on is not taken
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await wait_for(sub.drain(), timeout=5.0)  # type: ignore[no-untyped-call]
            except Exception:  # closed or disconnected connection: nothing more will arrive
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        task, self._task = self._task, None
        await cancel_all([task])
        try:
            await self.flush()
        except Exception as exc:  # counted, like a failed periodic write
            self._reject(f"ingest write failed: {exc}", count=0)
            log.warning("sensor ingest (%s): final write failed: %s", self.node, exc)

    @property
    def running(self) -> bool:
        return self._sub is not None or self._listening

    @property
    def pending(self) -> int:
        """Readings received but not written yet."""
        return len(self._pending)

    # --- receiving -------------------------------------------------------------------------
    async def _on_msg(self, msg: Msg) -> None:
        await self._take(msg.subject, msg.data)

    async def _on_reading(self, subject: str, data: bytes) -> None:
        if self._listening:
            await self._take(subject, data)

    async def _take(self, subject: str, data: bytes) -> None:
        if len(data) > MAX_READING_BYTES:
            self._reject(
                f"{subject}: payload of {len(data):,} bytes refused (a reading is at most "
                f"{MAX_READING_BYTES:,})"
            )
            return
        if len(self._pending) >= self.max_pending:
            self._reject(f"ingest backlog full ({self.max_pending} readings): reading dropped")
            return
        if self._pending_bytes + len(data) > MAX_PENDING_BYTES:
            self._reject(
                f"ingest backlog full ({MAX_PENDING_BYTES:,} bytes of payloads): reading dropped"
            )
            return
        self._pending.append((subject, data, time.time()))
        self._pending_bytes += len(data)
        self.stats["received"] += 1

    async def _writer(self) -> None:
        while True:
            await asyncio.sleep(self.batch_s)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the writer die
                self._reject(f"ingest write failed: {exc}", count=0)
                log.warning("sensor ingest (%s): %s", self.node, exc)

    async def flush(self) -> int:
        """Write everything received so far now; returns the number of readings written."""
        async with self._flush_lock:
            batch, self._pending = self._pending, []
            self._pending_bytes = 0
            if not batch:
                return 0
            return await asyncio.to_thread(self._write, batch)

    # --- parsing and writing (worker thread) -------------------------------------------------
    def _reject(self, reason: str, count: int = 1) -> None:
        if len(reason) > MAX_ERROR_CHARS:
            reason = reason[: MAX_ERROR_CHARS - 3] + "..."
        with self._stats_lock:
            self.stats["rejected"] += count
            self.stats["last_error"] = reason

    def _known_units(self) -> dict[_Key, str]:
        if self._units is None:
            self._units = {
                (s["sensor_type"], s["location"], s["device"]): s["unit"]
                for s in self.readings.sensors()
            }
        return self._units

    def parse(self, subject: str, data: bytes, arrived: float) -> tuple[_Key, str, float, float]:
        """``((sensor_type, location, device), unit, ts, value)`` of one message.

        Raises:
            BadReading: the reason the reading cannot be stored.
        """
        if not subject.startswith(self._prefix):
            raise BadReading(f"subject {subject!r} is not under {self.subject}")
        parts = subject[len(self._prefix) :].split(".")
        if len(parts) != 2 or not all(parts):
            raise BadReading(
                f"subject {subject!r} is not {SENSORS_PREFIX}.{self.node}.<location>.<type>"
            )
        location, sensor_type = parts
        if max(len(location), len(sensor_type)) > MAX_NAME_CHARS:
            raise BadReading(
                f"{_short(subject)}: a location or sensor type is longer than "
                f"{MAX_NAME_CHARS} characters"
            )
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadReading(f"{subject}: payload is not JSON or a number ({exc})") from None
        except RecursionError:  # escaping, it would drop the whole batch's good readings
            raise BadReading(f"{subject}: payload JSON is nested too deeply") from None
        device, unit = f"{location}-{sensor_type}", None
        ts: Any = arrived
        if isinstance(obj, dict):
            if "value" not in obj:
                raise BadReading(f"{subject}: payload has no 'value'")
            value = obj["value"]
            ts = obj.get("ts", arrived)
            device = obj.get("device", device)
            unit = obj.get("unit")
            if not isinstance(device, str) or not device:
                raise BadReading(f"{subject}: 'device' must be a non-empty string")
            if len(device) > MAX_DEVICE_CHARS:
                raise BadReading(
                    f"{subject}: 'device' is longer than {MAX_DEVICE_CHARS} characters"
                )
            if unit is not None and not isinstance(unit, str):
                raise BadReading(f"{subject}: 'unit' must be a string")
            if unit is not None and len(unit) > MAX_UNIT_CHARS:
                raise BadReading(f"{subject}: 'unit' is longer than {MAX_UNIT_CHARS} characters")
        else:
            value = obj
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadReading(f"{subject}: value {_short(value)} is not a number")
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            raise BadReading(f"{subject}: ts {_short(ts)} is not a number (epoch seconds)")
        value, ts = float(value), float(ts)
        if not math.isfinite(value):
            raise BadReading(f"{subject}: value {value} is not finite")
        if not (math.isfinite(ts) and 0 < ts < MAX_TS):
            raise BadReading(f"{subject}: ts {ts} is not epoch seconds")
        key = (sensor_type, location, device)
        known = self._known_units()
        stored = known.get(key)
        if unit is None:
            unit = stored if stored is not None else UNITS.get(sensor_type, "")
        elif stored is not None and unit != stored:
            raise BadReading(
                f"{subject}: unit {unit!r} differs from the unit {stored!r} stored for "
                f"device {device!r}"
            )
        if stored is None and len(known) >= MAX_SENSORS:
            raise BadReading(
                f"{subject}: new sensor {device!r} refused: node {self.node} has "
                f"{len(known)} sensors (at most {MAX_SENSORS})"
            )
        known.setdefault(key, unit)  # the first unit of a new sensor wins within a batch
        return key, unit, ts, value

    def _write(self, batch: list[_Raw]) -> int:
        ts: list[float] = []
        value: list[float] = []
        keys: list[_Key] = []
        units: list[str] = []
        for subject, data, arrived in batch:
            try:
                key, unit, t, v = self.parse(subject, data, arrived)
            except BadReading as exc:
                self._reject(str(exc))
                continue
            ts.append(t)
            value.append(v)
            keys.append(key)
            units.append(unit)
        if not ts:
            return 0
        try:
            written = self.readings.write_columns(
                ts,
                value,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                units,
            )
        except ConnectorError:
            self._units = None  # another writer may have changed the sensors: reload
            written = self._write_per_sensor(ts, value, keys, units)
        with self._stats_lock:
            self.stats["written"] += written
            self.stats["batches"] += 1
        if written and self.on_write is not None:
            try:
                self.on_write(written)
            except Exception as exc:
                log.warning("sensor ingest (%s): on_write callback failed: %s", self.node, exc)
        return written

    def _write_per_sensor(
        self, ts: list[float], value: list[float], keys: list[_Key], units: list[str]
    ) -> int:
        """Fallback after a failed batch: one write per sensor, so that one bad sensor
        does not take the others' readings down with it."""
        groups: dict[tuple[_Key, str], list[int]] = {}
        for i, (key, unit) in enumerate(zip(keys, units, strict=True)):
            groups.setdefault((key, unit), []).append(i)
        written = 0
        for (key, unit), idx in groups.items():
            try:
                written += self.readings.write_columns(
                    [ts[i] for i in idx], [value[i] for i in idx], key[0], key[1], key[2], unit
                )
            except ConnectorError as exc:
                self._reject(f"storing {len(idx)} readings of {key[2]!r} failed: {exc}", len(idx))
        return written

    def __repr__(self) -> str:
        return f"Ingestor({self.subject} -> {self.readings!r}, stats={self.stats})"
