"""The simulated shop floor: its layout (``devices.yaml`` of ``fades up``) and its physics.

Each office room ``roomK`` of a node gets a machine ``machineK`` with a temperature and a
vibration sensor, a ventilation fan in the room, a conveyor feeding the machine, and a
warning light on it. :class:`ShopFloor` holds the actuators' state, applies commands, and
changes the readings the sensor simulator publishes, so commands have visible effects:

* **CO2**: the machines add :data:`MACHINE_CO2_PPM` to the room's CO2 (over the outdoor
  420 ppm); a fan that is on removes up to :data:`FAN_REMOVES` of the excess (times its
  speed), approached exponentially with time constant ``tau_s``;
* **vibration**: about 2 mm/s while the conveyor runs, with a slow drift episode every
  30 minutes (up to +2.5 mm/s); a stopped conveyor brings it down to a tenth;
* **machine temperature**: 35 degrees idle, +10 while the conveyor runs.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

from fades.devices.spec import Device
from fades.testbed.generator import device_name

#: outdoor CO2 (ppm): what ventilation brings a room towards
OUTDOOR_CO2_PPM = 420.0
#: CO2 the machines of a room add over the office's own (ppm)
MACHINE_CO2_PPM = 600.0
#: share of the excess CO2 a fan at full speed removes
FAN_REMOVES = 0.85
#: default time constant of the fan, conveyor and machine responses (seconds)
TAU_S = 20.0
#: period of the machines' vibration drift episodes (seconds)
DRIFT_PERIOD_S = 1800.0

#: what each simulated actuator type accepts
COMMANDS: dict[str, list[str]] = {
    "fan": ["on", "off"],
    "conveyor": ["start", "stop"],
    "warning_light": ["on", "off", "blink"],
}
#: units of the machine sensors
MACHINE_UNITS = {"temperature": "°C", "vibration": "mm/s"}


def machine_of(room: str) -> str:
    """``room3`` -> ``machine3``."""
    return "machine" + room.removeprefix("room")


def shop_floor(rooms: list[str], room_types: list[str], tenants: list[str]) -> dict[str, Any]:
    """The ``devices.yaml`` of a node holding ``rooms``; ``tenants`` may command it all."""
    sensors: list[dict[str, Any]] = []
    actuators: list[dict[str, Any]] = []
    for room in rooms:
        machine = machine_of(room)
        for t in room_types:
            sensors.append({"device": device_name(room, t), "location": room, "type": t})
        for t, unit in MACHINE_UNITS.items():
            sensors.append(
                {"device": device_name(machine, t), "location": machine, "type": t, "unit": unit}
            )
        for dev, loc, kind in (
            (f"fan-{room}", room, "fan"),
            (f"conveyor-{machine}", machine, "conveyor"),
            (f"light-{machine}", machine, "warning_light"),
        ):
            actuators.append({"device": dev, "location": loc, "type": kind,
                              "commands": COMMANDS[kind], "tenants": list(tenants)})  # fmt: skip
    return {"sensors": sensors, "actuators": actuators}


def _noise(seed: int, key: str, ts: float) -> float:
    """Deterministic noise in [-1, 1] for a sensor at a time."""
    x = (
        math.sin((zlib.crc32(f"{seed}/{key}".encode()) % 100_003) * 0.731 + ts * 12.9898)
        * 43758.5453
    )
    return 2.0 * (x - math.floor(x)) - 1.0


@dataclass(slots=True)
class _Level:
    """A response relaxing exponentially towards ``target`` since ``since``."""

    target: float
    start: float
    since: float

    def at(self, ts: float, tau: float) -> float:
        if ts <= self.since:
            return self.start
        return self.target + (self.start - self.target) * math.exp(-(ts - self.since) / tau)

    def move(self, target: float, ts: float, tau: float) -> None:
        self.start, self.since, self.target = self.at(ts, tau), ts, target


class ShopFloor:
    """The actuators of one node and what they do to its readings (thread-safe)."""

    def __init__(self, devices: list[Device], *, seed: int = 0, tau_s: float = TAU_S) -> None:
        if not (math.isfinite(tau_s) and tau_s > 0):
            raise ValueError(f"tau_s must be positive seconds, not {tau_s!r}")
        self.seed, self.tau_s = seed, tau_s
        self.actuators = {d.device: d for d in devices if d.kind == "actuator"
                          and d.type in COMMANDS}  # fmt: skip
        self.machine_sensors = [(d.location, d.type) for d in devices if d.kind == "sensor"
                                and d.location.startswith("machine")
                                and d.type in MACHINE_UNITS]  # fmt: skip
        now = time.time()
        self._lock = threading.Lock()
        self.states: dict[str, dict[str, Any]] = {}
        #: location -> fan level (0..1), conveyor level (0..1)
        self._fans: dict[str, _Level] = {}
        self._conveyors: dict[str, _Level] = {}
        for d in self.actuators.values():
            if d.type == "fan":
                self.states[d.device] = {"power": "off", "speed": 0}
                self._fans[d.location] = _Level(0.0, 0.0, now)
            elif d.type == "conveyor":
                self.states[d.device] = {"running": True}
                self._conveyors[d.location] = _Level(1.0, 1.0, now)
            else:
                self.states[d.device] = {"light": "off"}

    def state(self, device: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.states[device])

    # --- commands ----------------------------------------------------------------------------
    def apply(
        self, device: str, command: str, args: dict[str, Any], ts: float | None = None
    ) -> tuple[str, str]:
        """Apply a command: ``("applied", "")`` or ``("refused", why)``."""
        ts = time.time() if ts is None else ts
        d = self.actuators.get(device)
        if d is None:
            return "refused", f"{device} is not simulated here"
        if command not in d.commands or command not in COMMANDS[d.type]:
            return "refused", f"{device} does not accept {command!r}"
        with self._lock:
            if d.type == "fan":
                speed = args.get("speed", 100) if command == "on" else 0
                if not isinstance(speed, int) or isinstance(speed, bool) or not 0 <= speed <= 100:
                    return "refused", f"speed must be a whole number 1-100, not {speed!r}"
                if command == "on" and speed == 0:
                    return "refused", "speed must be a whole number 1-100, not 0"
                self.states[device] = {"power": command, "speed": speed}
                self._fans[d.location].move(speed / 100.0, ts, self.tau_s)
            elif d.type == "conveyor":
                running = command == "start"
                self.states[device] = {"running": running}
                self._conveyors[d.location].move(1.0 if running else 0.0, ts, self.tau_s / 4)
            else:
                hz = args.get("hz", 1.0) if command == "blink" else None
                if hz is not None and not (isinstance(hz, int | float) and 0.2 <= hz <= 5):
                    return "refused", f"hz must be 0.2-5 blinks per second, not {hz!r}"
                self.states[device] = {"light": command} | ({"hz": hz} if hz else {})
        return "applied", ""

    # --- readings ----------------------------------------------------------------------------
    def adjust(self, location: str, sensor_type: str, ts: float, value: float) -> float:
        """A room reading as the shop floor changes it (CO2: machines and the fan)."""
        if sensor_type != "co2" or location not in self._fans:
            return value
        with self._lock:
            fan = self._fans[location].at(ts, self.tau_s)
        excess = max(0.0, value - OUTDOOR_CO2_PPM) + MACHINE_CO2_PPM
        return round(OUTDOOR_CO2_PPM + excess * (1.0 - FAN_REMOVES * fan), 2)

    def machine_value(self, location: str, sensor_type: str, ts: float) -> float:
        """A machine sensor's reading at ``ts``."""
        with self._lock:
            level = self._conveyors.get(location)
            running = level.at(ts, self.tau_s / 4) if level is not None else 1.0
        noise = _noise(self.seed, f"{location}/{sensor_type}", ts)
        if sensor_type == "vibration":
            pos = (ts % DRIFT_PERIOD_S) / DRIFT_PERIOD_S
            drift = 2.5 * min(1.0, max(0.0, (pos - 2 / 3) * 3))
            base = 2.0 + 0.3 * math.sin(2 * math.pi * ts / 60.0) + drift + 0.1 * noise
            return round(base * (0.1 + 0.9 * running), 3)
        return round(35.0 + 10.0 * running + 0.5 * math.sin(ts / 300.0) + 0.2 * noise, 2)
