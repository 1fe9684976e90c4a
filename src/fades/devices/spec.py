"""The devices a node declares in its folder (``devices.yaml``): sensors and actuators.

::

    sensors:
      - {device: machine1-vibration, location: machine1, type: vibration, unit: mm/s}
    actuators:
      - device: fan-room1
        location: room1
        type: fan
        commands: ["on", "off"]      # what it accepts (unquoted on/off are read as on/off too)
        tenants: [facilities]        # who may command it; "*" for every tenant, [] for nobody

A sensor publishes on the MQTT topic ``sensors/<node>/<location>/<type>`` (``topic`` may
name another one); an actuator takes commands on ``actuators/<node>/<device>/set`` and
reports its state on ``actuators/<node>/<device>/state``. Every problem is a one-line
:class:`~fades.errors.DeviceSpecError` naming the entry and the field, and stops the node
from starting. The node puts its devices in its registry entry (:func:`registry_entries`),
each with the tenants its access policy lets see it and the tenants that may command it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fades.broker.policy import AccessPolicy
from fades.errors import DeviceSpecError
from fades.sensors.units import UNITS

#: the file in the node folder
DEVICES_FILE = "devices.yaml"
#: most devices one node declares (sensors and actuators together)
MAX_DEVICES = 1000
#: most commands one actuator accepts
MAX_COMMANDS = 32
#: largest devices.yaml read
MAX_FILE_BYTES = 1024 * 1024

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_COMMAND = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOPIC = re.compile(r"^[A-Za-z0-9_/-]{1,255}$")
_SENSOR_KEYS = {"device", "location", "type", "unit", "topic"}
_ACTUATOR_KEYS = {"device", "location", "type", "commands", "tenants"}

Kind = Literal["sensor", "actuator"]


@dataclass(frozen=True, slots=True)
class Device:
    """One declared device of a node."""

    node: str
    device: str
    kind: Kind
    location: str
    type: str
    unit: str = ""
    topic: str = ""
    commands: tuple[str, ...] = ()
    #: who may command it (None: every tenant); sensors: nobody
    tenants: tuple[str, ...] | None = field(default=())

    def may_command(self, tenant: str) -> bool:
        return self.kind == "actuator" and (self.tenants is None or tenant in self.tenants)


def actuator_topic(node: str, device: str, leaf: Literal["set", "state"]) -> str:
    """The MQTT topic of an actuator's commands (``set``) or state reports (``state``)."""
    return f"actuators/{node}/{device}/{leaf}"


def actuator_subject(node: str, device: str, leaf: Literal["set", "state"]) -> str:
    """The NATS subject the MQTT gateway maps :func:`actuator_topic` to."""
    return f"actuators.{node}.{device}.{leaf}"


def _fail(where: str, msg: str) -> DeviceSpecError:
    return DeviceSpecError(f"{DEVICES_FILE}: {where}: {msg}")


def _text(entry: dict[str, Any], key: str, where: str, pattern: re.Pattern[str]) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise _fail(where, f"{key} must be 1-64 letters, digits, '_' or '-' (got {value!r})")
    return value


def _commands(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail(where, "commands must be a non-empty list of names, e.g. ['on', 'off']")
    if len(raw) > MAX_COMMANDS:
        raise _fail(where, f"at most {MAX_COMMANDS} commands (got {len(raw)})")
    out: list[str] = []
    for c in raw:
        if isinstance(c, bool):  # YAML 1.1 reads unquoted on/off as true/false
            c = "on" if c else "off"
        if not isinstance(c, str) or not _COMMAND.match(c):
            raise _fail(where, f"command {c!r} must be 1-32 letters, digits, '_' or '-'")
        if c in out:
            raise _fail(where, f"command {c!r} is listed twice")
        out.append(c)
    return tuple(out)


def _tenants(raw: Any, where: str) -> tuple[str, ...] | None:
    if raw == "*":
        return None
    if not isinstance(raw, list):
        raise _fail(where, f"tenants must be '*' or a list of tenant names (got {raw!r})")
    for t in raw:
        if not isinstance(t, str) or not _TENANT.match(t):
            raise _fail(where, f"tenant {t!r} is not a tenant name")
    return None if "*" in raw else tuple(raw)


def parse_devices(obj: Any, node: str) -> list[Device]:
    """The devices of ``node`` from the parsed YAML of ``devices.yaml``.

    Raises:
        DeviceSpecError: one line naming the entry and what is wrong.
    """
    if obj is None:
        return []
    if not isinstance(obj, dict):
        raise DeviceSpecError(f"{DEVICES_FILE} must be a mapping with 'sensors' and 'actuators'")
    extra = sorted(set(obj) - {"sensors", "actuators"})
    if extra:
        raise DeviceSpecError(
            f"{DEVICES_FILE}: unknown key(s) {', '.join(map(str, extra))}; "
            "expected sensors and actuators"
        )
    out: list[Device] = []
    seen: set[str] = set()
    for section, kind, keys in (
        ("sensors", "sensor", _SENSOR_KEYS),
        ("actuators", "actuator", _ACTUATOR_KEYS),
    ):
        items = obj.get(section) or []
        if not isinstance(items, list):
            raise DeviceSpecError(f"{DEVICES_FILE}: {section} must be a list of devices")
        for i, entry in enumerate(items):
            where = f"{section}[{i}]"
            if not isinstance(entry, dict):
                raise _fail(where, "must be a mapping (device, location, type, ...)")
            unknown = sorted(set(map(str, entry)) - keys)
            if unknown:
                raise _fail(
                    where,
                    f"unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(keys))}",
                )
            name = _text(entry, "device", where, _TOKEN)
            where = f"{section}[{i}] ({name})"
            if name in seen:
                raise _fail(where, "device name declared twice")
            seen.add(name)
            location = _text(entry, "location", where, _TOKEN)
            dtype = _text(entry, "type", where, _TOKEN)
            if kind == "sensor":
                unit = entry.get("unit", UNITS.get(dtype, ""))
                if not isinstance(unit, str) or len(unit) > 32:
                    raise _fail(where, "unit must be text of at most 32 characters")
                topic = entry.get("topic", f"sensors/{node}/{location}/{dtype}")
                if not isinstance(topic, str) or not _TOPIC.match(topic):
                    raise _fail(where, f"topic {topic!r} is not an MQTT topic without wildcards")
                out.append(Device(node, name, "sensor", location, dtype, unit, topic))
            else:
                if "commands" not in entry:
                    raise _fail(where, "an actuator needs commands, e.g. ['on', 'off']")
                commands = _commands(entry["commands"], where)
                tenants = _tenants(entry.get("tenants", []), where)
                topic = actuator_topic(node, name, "set")
                out.append(
                    Device(node, name, "actuator", location, dtype, "", topic, commands, tenants)
                )
            if len(out) > MAX_DEVICES:
                raise DeviceSpecError(f"{DEVICES_FILE}: at most {MAX_DEVICES} devices per node")
    return out


def load_devices(home: str | Path, node: str) -> list[Device]:
    """The devices declared in ``<home>/devices.yaml`` (none if the file is absent).

    Raises:
        DeviceSpecError: unreadable, too large, not YAML, or a malformed entry.
    """
    path = Path(home).expanduser() / DEVICES_FILE
    if not path.exists():
        return []
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DeviceSpecError(f"{path} is {size:,} bytes, larger than {MAX_FILE_BYTES:,}")
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeviceSpecError(f"cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DeviceSpecError(f"{path} is not valid YAML: {first}") from None
    return parse_devices(obj, node)


def _readers(policy: AccessPolicy | None, dev: Device) -> list[str] | None:
    """Tenants the node's access policy lets see ``dev`` (None: every tenant)."""
    if policy is None or type(policy) is not AccessPolicy:  # absent or allow-all
        return None
    out = []
    for tenant, rule in policy.tenants.items():
        if dev.kind == "sensor":
            ok = rule.allows(dev.location, dev.type)
        else:  # an actuator is seen by who may read its location (any sensor type)
            ok = rule.locations is None or dev.location in rule.locations
        if ok or dev.may_command(tenant):
            out.append(tenant)
    return sorted(out)


def registry_entries(devices: list[Device], policy: AccessPolicy | None) -> list[dict[str, Any]]:
    """The devices as the node puts them in its registry entry."""
    return [
        {
            "device": d.device,
            "kind": d.kind,
            "location": d.location,
            "type": d.type,
            "topic": d.topic,
            "unit": d.unit,
            "commands": list(d.commands),
            "tenants": None if d.tenants is None else list(d.tenants),
            "readers": _readers(policy, d),
        }
        for d in devices
    ]


def from_entry(node: str, entry: dict[str, Any]) -> Device:
    """A device back from its registry entry (as the controller reads it)."""
    tenants = entry.get("tenants")
    return Device(
        node=node,
        device=str(entry["device"]),
        kind="actuator" if entry.get("kind") == "actuator" else "sensor",
        location=str(entry.get("location", "")),
        type=str(entry.get("type", "")),
        unit=str(entry.get("unit", "")),
        topic=str(entry.get("topic", "")),
        commands=tuple(entry.get("commands") or ()),
        tenants=None if tenants is None else tuple(tenants),
    )
