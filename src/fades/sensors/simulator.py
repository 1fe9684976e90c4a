"""Stream the office testbed's sensors over MQTT, in real time.

Every device of a node's rooms (one per room and sensor type) publishes one reading every
``rate_s`` seconds to ``sensors/<node>/<room>/<type>`` as JSON::

    {"ts": 1767225600.25, "value": 21.37, "device": "room1-temperature-1", "unit": "°C"}

Values come from :class:`fades.testbed.LiveOffice`: the testbed's signal models evaluated at
the reading's time, deterministic for a given seed. Readings sit on a fixed grid per device
(``phase + k * rate_s`` in epoch seconds, the phase spreading devices over the period), so
their timestamps are the current time and two runs with the same seed agree.

The client speaks MQTT 3.1.1 (the only version the NATS MQTT gateway supports) through
paho-mqtt's v2 callback API. paho's network thread reconnects when the broker goes away
(1 s, doubling up to 5 s); QoS 0 readings published meanwhile are dropped and counted,
QoS 1 and 2 readings wait in a bounded queue.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fades.devices.floor import MACHINE_UNITS
from fades.errors import DatasetError, FabricError
from fades.fabric.subjects import check_token, sensor_topic
from fades.sensors.units import UNITS
from fades.testbed import LiveOffice
from fades.testbed.generator import device_name

if TYPE_CHECKING:
    from fades.devices.floor import ShopFloor

log = logging.getLogger("fades.sensors")

#: QoS 1/2 readings kept while the broker is away (older ones are kept, newer ones dropped)
MAX_QUEUED = 10_000
#: how often ``progress`` is called at most (seconds)
PROGRESS_EVERY_S = 0.25


def device_label(location: str, sensor_type: str) -> str:
    """The ``device`` field of a simulated reading: the testbed's device for that sensor.

    Live readings continue the stored history of the same sensor (``room1-temperature-1``).
    """
    return device_name(location, sensor_type)


def payload(
    ts: float, value: float, location: str, sensor_type: str, unit: str | None = None
) -> bytes:
    """The JSON payload of one reading."""
    return json.dumps(
        {
            "ts": ts,
            "value": value,
            "device": device_label(location, sensor_type),
            "unit": UNITS.get(sensor_type, "") if unit is None else unit,
        },
        ensure_ascii=False,
    ).encode()


def parse_hostport(text: str, default_port: int = 1883) -> tuple[str, int]:
    """``HOST:PORT`` (``mqtt://`` or ``tcp://`` prefix and ``[v6]:PORT`` accepted)."""
    s = text.strip()
    for prefix in ("mqtt://", "tcp://"):
        if s.startswith(prefix):
            s = s[len(prefix) :]
    host, port_s = s, ""
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise FabricError(f"bad MQTT address {text!r}: unclosed '['")
        host, rest = s[1:end], s[end + 1 :]
        port_s = rest[1:] if rest.startswith(":") else rest
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    try:
        port = int(port_s) if port_s else default_port
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise FabricError(f"bad MQTT address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host, port


class SensorSimulator:
    """Publish the testbed sensors of ``node``'s rooms to an MQTT broker.

    Args:
        host, port: the MQTT broker (the NATS server's MQTT gateway).
        node: the node the rooms belong to (first topic level after ``sensors``).
        rooms, first_room: rooms ``room<first_room>`` .. ``room<first_room + rooms - 1>``.
        rate_s: seconds between two readings of one device.
        qos: MQTT QoS (0, 1 or 2).
        seed: seed of the testbed models.
        connect_timeout_s: how long :meth:`connect` keeps trying before it gives up.
        floor: the node's simulated shop floor (:class:`fades.devices.floor.ShopFloor`):
            its machine sensors are published too, and it adjusts the rooms' readings
            (a fan that is on lowers the room's CO2).

    ``stats`` holds ``published`` (accepted by the client), ``dropped`` (broker away),
    ``acked`` (QoS 1/2 acknowledgements), ``connects`` and ``disconnects``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        node: str,
        rooms: int = 2,
        first_room: int = 1,
        rate_s: float = 1.0,
        qos: int = 0,
        seed: int = 0,
        *,
        connect_timeout_s: float = 5.0,
        floor: ShopFloor | None = None,
        password: str | None = None,
    ) -> None:
        check_token(node)
        self.password = password  # the broker's token (NATS's MQTT gateway takes it here)
        if not (math.isfinite(rate_s) and rate_s > 0):
            raise FabricError(f"rate must be a positive number of seconds (got {rate_s})")
        if qos not in (0, 1, 2):
            raise FabricError(f"qos must be 0, 1 or 2 (got {qos})")
        if rooms < 1:
            raise FabricError(f"rooms must be at least 1 (got {rooms})")
        try:
            self.office = LiveOffice(rooms, first_room, seed)
        except DatasetError as exc:
            raise FabricError(str(exc)) from exc
        self.host, self.port, self.node = host, port, node
        self.rate_s, self.qos, self.seed = rate_s, qos, seed
        self.connect_timeout_s = connect_timeout_s
        self.floor = floor
        self.devices = self.office.devices()
        if floor is not None:
            self.devices += floor.machine_sensors
        self.topics = [sensor_topic(node, loc, st) for loc, st in self.devices]
        self.stats: dict[str, int] = {
            "published": 0,
            "dropped": 0,
            "acked": 0,
            "connects": 0,
            "disconnects": 0,
        }
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._refused: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # --- connection ------------------------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if rc.is_failure:
            self._refused = str(rc)
            return
        self.stats["connects"] += 1
        if self.stats["connects"] > 1:
            log.info("sensor simulator %s: reconnected to %s", self.node, self.url)
        self._connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if self._connected.is_set():
            self.stats["disconnects"] += 1
            log.info("sensor simulator %s: lost %s (%s), reconnecting", self.node, self.url, rc)
        self._connected.clear()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        if self.qos:
            self.stats["acked"] += 1

    def connect(self) -> None:
        """Connect (retrying until ``connect_timeout_s``) and start paho's network thread.

        Raises:
            FabricError: the broker is unreachable or refused the connection.
        """
        with self._lock:
            if self._client is not None:
                return
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"fades-sim-{self.node}-{os.getpid()}-{os.urandom(3).hex()}",
                protocol=mqtt.MQTTv311,
                clean_session=True,
            )
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_publish = self._on_publish
            if self.password:
                client.username_pw_set("fades", self.password)
            client.reconnect_delay_set(1, 5)
            client.max_queued_messages_set(MAX_QUEUED)
            self._refused = None
            deadline = time.monotonic() + self.connect_timeout_s
            last: Exception | None = None
            while True:
                try:
                    client.connect(self.host, self.port, keepalive=30)
                    break
                except (OSError, ValueError) as exc:
                    last = exc
                if time.monotonic() >= deadline:
                    raise FabricError(
                        f"cannot reach the MQTT broker at {self.host}:{self.port} "
                        f"({last}); is the NATS server (with its MQTT gateway) running?"
                    )
                time.sleep(0.1)
            client.loop_start()
            while not self._connected.wait(0.05):
                if self._refused is not None or time.monotonic() >= deadline:
                    client.loop_stop()
                    client.disconnect()
                    why = self._refused or "no CONNACK"
                    raise FabricError(
                        f"the MQTT broker at {self.host}:{self.port} did not accept us: {why}"
                    )
            self._client = client

    def close(self, flush_s: float = 2.0) -> None:
        """Wait up to ``flush_s`` for QoS 1/2 acknowledgements, then disconnect."""
        with self._lock:
            client, self._client = self._client, None
            if client is None:
                return
            if self.qos:
                deadline = time.monotonic() + flush_s
                while self.stats["acked"] < self.stats["published"] and (
                    time.monotonic() < deadline and self._connected.is_set()
                ):
                    time.sleep(0.01)
            self._connected.clear()  # a disconnect we asked for is not counted
            client.disconnect()
            client.loop_stop()

    # --- publishing ------------------------------------------------------------------------
    def run(
        self,
        duration_s: float | None = None,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Publish until ``duration_s`` has passed or ``stop`` is set; returns the count
        published (by this call). Connects first if needed and disconnects at the end.

        ``progress(published)`` is called at most every 0.25 s and once at the end.
        """
        stop = stop if stop is not None else self._stop
        self.connect()
        client = self._client
        assert client is not None
        rate = self.rate_s
        phases = np.array([self._phase(loc, st, rate) for loc, st in self.devices])
        start = time.time()
        end = start + duration_s if duration_s is not None else math.inf
        k = np.ceil((start - phases) / rate)  # next tick of each device
        published = 0
        last_progress = 0.0
        try:
            while not stop.is_set():
                now = time.time()
                due_t = phases + k * rate
                if float(due_t.min()) >= end:
                    break
                # after a stall (suspended process, slow broker) skip ahead, do not burst
                late = due_t < now - rate
                if late.any():
                    k[late] = np.ceil((now - phases[late]) / rate)
                    due_t = phases + k * rate
                for i in np.flatnonzero(due_t <= now).tolist():
                    ts = round(float(due_t[i]), 3)  # what the payload carries
                    if ts >= end:
                        continue
                    loc, st = self.devices[i]
                    value, unit = self._value(loc, st, ts)
                    data = payload(ts, value, loc, st, unit)
                    info = client.publish(self.topics[i], data, qos=self.qos)
                    # QoS 1/2 readings published while away are queued and sent on reconnect
                    if info.rc == mqtt.MQTT_ERR_SUCCESS or (
                        self.qos and info.rc == mqtt.MQTT_ERR_NO_CONN
                    ):
                        published += 1
                        self.stats["published"] += 1
                    else:
                        self.stats["dropped"] += 1
                    k[i] += 1
                if progress is not None and now - last_progress >= PROGRESS_EVERY_S:
                    last_progress = now
                    progress(published)
                next_t = min(float((phases + k * rate).min()), end)
                stop.wait(max(0.0, next_t - time.time()))
            if progress is not None:
                progress(published)
        finally:
            self.close()
        return published

    def _phase(self, location: str, sensor_type: str, rate: float) -> float:
        if location in self.office.rooms:
            return self.office.phase(location, sensor_type, rate)
        return (zlib.crc32(f"{self.seed}/{location}/{sensor_type}".encode()) % 1000) / 1000 * rate

    def _value(self, location: str, sensor_type: str, ts: float) -> tuple[float, str | None]:
        """A reading and its unit (None: the sensor type's usual one)."""
        floor = self.floor
        if location in self.office.rooms:
            value = self.office.value(location, sensor_type, ts)
            return (
                value if floor is None else floor.adjust(location, sensor_type, ts, value)
            ), None
        assert floor is not None
        return floor.machine_value(location, sensor_type, ts), MACHINE_UNITS.get(sensor_type)

    # --- background ------------------------------------------------------------------------
    def start(self) -> SensorSimulator:
        """Connect (raising :class:`FabricError` if the broker is unreachable), then publish
        in a background thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self.connect()

        def target() -> None:
            try:
                self.run(stop=self._stop)
            except BaseException as exc:  # reported by stop(); the thread must not die loud
                self._error = exc
                log.warning("sensor simulator %s stopped: %s", self.node, exc)

        self._thread = threading.Thread(target=target, name=f"fades-sim-{self.node}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread and disconnect."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SensorSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"SensorSimulator({self.url}, node={self.node!r}, rooms={self.office.rooms}, "
            f"rate_s={self.rate_s}, qos={self.qos})"
        )
