"""Simulated actuators over MQTT: they take commands, report state, and change readings.

A :class:`DeviceSimulator` runs beside the node's :class:`~fades.sensors.simulator.
SensorSimulator` (same process, ``fades up``). It subscribes to
``actuators/<node>/+/set``, applies each command to its :class:`~fades.devices.floor.
ShopFloor` and answers on ``actuators/<node>/<device>/state`` with the command's id,
``applied`` or ``refused`` (with why) and the new state; every ``report_every_s`` it repeats
every actuator's state (without a command id), so a controller that starts later learns it.
Actuators of a type the shop floor does not simulate get no answer (their commands time
out). The sensor simulator asks the shop floor for the machine sensors' readings and for
the rooms' CO2, so a fan that is on shows in the readings.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fades.devices.floor import TAU_S, ShopFloor
from fades.devices.spec import Device, actuator_topic
from fades.errors import FabricError
from fades.fabric.subjects import check_token

log = logging.getLogger("fades.devices")

#: seconds between two unsolicited state reports of every actuator
REPORT_EVERY_S = 5.0
#: largest command payload read
MAX_COMMAND_BYTES = 64 * 1024


class DeviceSimulator:
    """The simulated actuators of ``node`` on an MQTT broker (the NATS MQTT gateway).

    Args:
        host, port: the MQTT broker.
        node: the node the devices belong to.
        devices: the node's declared devices (:func:`fades.devices.spec.load_devices`).
        seed: seed of the machines' noise.
        tau_s: time constant of the fan's effect (seconds).
        report_every_s: seconds between unsolicited state reports.
    """

    def __init__(
        self,
        host: str,
        port: int,
        node: str,
        devices: list[Device],
        *,
        seed: int = 0,
        tau_s: float = TAU_S,
        report_every_s: float = REPORT_EVERY_S,
        connect_timeout_s: float = 5.0,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.node = host, port, check_token(node)
        self.password = password  # the broker's token (NATS's MQTT gateway takes it here)
        self.floor = ShopFloor(devices, seed=seed, tau_s=tau_s)
        self.report_every_s = report_every_s
        self.connect_timeout_s = connect_timeout_s
        #: commands received, applied, refused; reports sent
        self.stats: dict[str, int] = dict.fromkeys(("received", "applied", "refused", "reports"), 0)
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- MQTT --------------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            return
        client.subscribe(f"actuators/{self.node}/+/set", qos=0)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) != 4 or len(msg.payload) > MAX_COMMAND_BYTES:
            return
        device = parts[2]
        if device not in self.floor.actuators:
            return  # not simulated here: no answer
        self.stats["received"] += 1
        try:
            cmd = json.loads(msg.payload)
            command, args = cmd["command"], cmd.get("args") or {}
            cid = cmd.get("command_id")
            if not isinstance(command, str) or not isinstance(args, dict):
                raise ValueError("command must be text and args an object")
        except (ValueError, KeyError, TypeError) as exc:
            outcome, detail, cid = "refused", f"malformed command: {exc}", None
        else:
            outcome, detail = self.floor.apply(device, command, args)
        self.stats[outcome] += 1
        self._report(device, cid, outcome, detail)

    def _report(
        self, device: str, cid: str | None = None, outcome: str | None = None, detail: str = ""
    ) -> None:
        client = self._client
        if client is None:
            return
        body: dict[str, Any] = {"state": self.floor.state(device), "at": time.time()}
        if cid is not None:
            body |= {"command_id": cid, "outcome": outcome, "detail": detail}
        client.publish(actuator_topic(self.node, device, "state"), json.dumps(body), qos=0)
        self.stats["reports"] += 1

    def start(self) -> DeviceSimulator:
        """Connect (raising :class:`FabricError` if the broker is unreachable) and serve."""
        if self._client is not None:
            return self
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fades-devices-{self.node}-{os.getpid()}-{os.urandom(3).hex()}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        if self.password:
            client.username_pw_set("fades", self.password)
        client.reconnect_delay_set(1, 5)
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                client.connect(self.host, self.port, keepalive=30)
                break
            except (OSError, ValueError) as exc:
                if time.monotonic() >= deadline:
                    raise FabricError(
                        f"device simulator {self.node}: cannot reach the MQTT broker at "
                        f"{self.host}:{self.port} ({exc})"
                    ) from None
                time.sleep(0.1)
        client.loop_start()
        if not self._connected.wait(max(0.1, deadline - time.monotonic())):
            client.loop_stop()
            client.disconnect()
            raise FabricError(f"device simulator {self.node}: the MQTT broker did not accept us")
        self._client = client
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._reports, name=f"fades-devices-{self.node}", daemon=True
        )
        self._thread.start()
        return self

    def _reports(self) -> None:
        while True:
            for device in list(self.floor.actuators):
                if self._connected.is_set():
                    self._report(device)
            if self._stop.wait(self.report_every_s):
                return

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def __enter__(self) -> DeviceSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
