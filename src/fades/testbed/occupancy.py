"""A real office data set: the room-occupancy measurements bundled with ``river``.

``river`` ships a 509-row excerpt (one row every 16 minutes, February 2015) of the UCI
occupancy-detection data set (Candanedo and Feldheim, 2016) as ``occupancy.csv``. Its header
is ``time,V1,V2,V3,V4``: V1 is temperature (°C), V2 relative humidity (%), V3 light (lux) and
V4 CO2 (ppm). The excerpt carries no occupancy label. A proxy can be derived from the light
level (``occupancy_light_lux=300``: the lamps put an occupied room above about 300 lux), but it
is off by default: a proxy built from one of the inputs would make any light-based occupancy
function look perfect. Accuracy is measured on the synthetic testbed's ground truth instead.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fades.broker.base import Dataset
from fades.errors import DatasetError

if TYPE_CHECKING:
    from fades.broker.connectors.sqlite import SQLiteConnector

RIVER_COLUMNS: dict[str, tuple[str, str]] = {
    "V1": ("temperature", "°C"),
    "V2": ("humidity", "%"),
    "V3": ("light", "lux"),
    "V4": ("co2", "ppm"),
}
_CANDIDATES = (("drift", "datasets", "occupancy.csv"), ("datasets", "drift", "occupancy.csv"))
_HINT = "install it with: pip install 'fades[datasets]'"


def river_occupancy_path() -> Path:
    """Where the installed ``river`` keeps ``occupancy.csv``.

    Raises:
        DatasetError: river is not installed, or this version has no such file.
    """
    try:
        root = resources.files("river")
    except ModuleNotFoundError:
        raise DatasetError(f"the river package is not installed; {_HINT}") from None
    for parts in _CANDIDATES:
        candidate = root.joinpath(*parts)
        if candidate.is_file():
            return Path(str(candidate))
    raise DatasetError(
        "the installed river package has no occupancy.csv (looked in "
        + ", ".join("/".join(p) for p in _CANDIDATES)
        + f"); {_HINT}"
    )


def read_river_occupancy(
    location: str = "lab", *, occupancy_light_lux: float | None = None
) -> Dataset:
    """The river occupancy data as a :class:`Dataset` of readings at ``location``.

    Sensor types: temperature, humidity, light, co2 and (derived, unless
    ``occupancy_light_lux`` is ``None``) occupancy; devices are ``<location>-<type>-1``.
    """
    path = river_occupancy_path()
    ts: list[float] = []
    cols: dict[str, list[float]] = {k: [] for k in RIVER_COLUMNS}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"time", *RIVER_COLUMNS} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(
                    f"{path}: expected columns time, V1..V4; missing {', '.join(sorted(missing))}"
                )
            for row in reader:
                dt = datetime.strptime(row["time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                ts.append(dt.timestamp())
                for k in RIVER_COLUMNS:
                    cols[k].append(float(row[k]))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    t = np.asarray(ts, np.float64)
    series: list[tuple[str, str, npt.NDArray[np.float64]]] = [
        (stype, unit, np.asarray(cols[k], np.float64)) for k, (stype, unit) in RIVER_COLUMNS.items()
    ]
    if occupancy_light_lux is not None:
        light = np.asarray(cols["V3"], np.float64)
        series.append(("occupancy", "0/1", (light >= occupancy_light_lux).astype(np.float64)))
    n = len(t)
    order = np.argsort(np.tile(t, len(series)), kind="stable")
    all_ts = np.tile(t, len(series))[order]
    all_val = np.concatenate([v for _, _, v in series])[order]
    st = [s for s, _, _ in series for _ in range(n)]
    st = [st[i] for i in order]
    return Dataset.from_records(
        all_ts,
        all_val,
        st,
        [location] * len(st),
        [f"{location}-{s}-1" for s in st],
        {s: u for s, u, _ in series},
    )


def load_river_occupancy(
    store: SQLiteConnector,
    location: str = "lab",
    *,
    occupancy_light_lux: float | None = None,
) -> int:
    """Write the river occupancy readings into ``store`` at ``location``; returns the rows."""
    return store.write(read_river_occupancy(location, occupancy_light_lux=occupancy_light_lux))
