"""Data to run fades on: a synthetic office testbed and a small real occupancy data set."""

from fades.testbed.generator import (
    SENSOR_TYPES,
    UNITS,
    LiveOffice,
    SensorSeries,
    device_name,
    expected_rows,
    generate_office,
    iter_office,
    populate,
    room_names,
)
from fades.testbed.occupancy import (
    load_river_occupancy,
    read_river_occupancy,
    river_occupancy_path,
)

__all__ = [
    "SENSOR_TYPES",
    "UNITS",
    "LiveOffice",
    "SensorSeries",
    "device_name",
    "expected_rows",
    "generate_office",
    "iter_office",
    "load_river_occupancy",
    "populate",
    "read_river_occupancy",
    "river_occupancy_path",
    "room_names",
]
