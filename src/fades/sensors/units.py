"""The sensor types fades knows and the unit each is measured in.

The node's MQTT ingest fills in a reading's unit from here when the sensor did not send
one; the synthetic testbed and the sensor simulator take their units from here too (this
module is the source; nothing in production imports the testbed).
"""

from __future__ import annotations

UNITS: dict[str, str] = {
    "humidity": "%",
    "temperature": "°C",
    "light": "lux",
    "audio": "dB",
    "proximity": "devices",
    "co2": "ppm",
    "occupancy": "0/1",
}
SENSOR_TYPES: tuple[str, ...] = tuple(UNITS)

__all__ = ["SENSOR_TYPES", "UNITS"]
