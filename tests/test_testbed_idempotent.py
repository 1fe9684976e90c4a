"""Populating the testbed twice never doubles the data, and a store can be cleared by
location, sensor type and time range (real SQLite files in tmp_path)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from fades.broker import SQLiteConnector
from fades.task import Selector
from fades.testbed import populate

MONDAY = datetime(2024, 3, 4, tzinfo=UTC)
DAYS, RATE = 0.25, 60.0


def series(store: SQLiteConnector, location: str, sensor_type: str) -> np.ndarray:
    ds = store.fetch(Selector.model_validate({"location": location, "sensor_type": sensor_type}))
    return np.asarray(ds.ts)


def test_populating_the_same_range_twice_keeps_one_series(tmp_path: Path) -> None:
    with SQLiteConnector(tmp_path / "r.db") as store:
        n = populate(store, DAYS, RATE, seed=1, start=MONDAY)
        assert store.count() == n
        populate(store, DAYS, RATE, seed=1, start=MONDAY)
        assert store.count() == n


def test_populating_a_shifted_range_again_does_not_interleave_two_series(
    tmp_path: Path,
) -> None:
    # what `fades data generate` does: the period ends "now", a few seconds later each run
    with SQLiteConnector(tmp_path / "r.db") as store:
        n = populate(store, DAYS, RATE, seed=1, start=MONDAY)
        populate(store, DAYS, RATE, seed=1, start=MONDAY + timedelta(seconds=7))
        assert store.count() <= n + 5 * 7  # at most one extra reading per device
        ts = series(store, "room1", "temperature")
        assert np.diff(ts).min() >= RATE * 0.5  # one reading per period, not two
        assert ts[0] < MONDAY.timestamp() + RATE  # the older readings before the new range stay


def test_replace_deletes_every_reading_of_the_generated_devices(tmp_path: Path) -> None:
    with SQLiteConnector(tmp_path / "r.db") as store:
        populate(store, DAYS, RATE, seed=1, start=MONDAY)
        later = MONDAY + timedelta(days=2)
        n = populate(store, DAYS, RATE, seed=1, start=later, replace=True)
        assert store.count() == n
        assert series(store, "room1", "light").min() >= later.timestamp()


def test_populate_leaves_other_rooms_and_sensors_alone(tmp_path: Path) -> None:
    with SQLiteConnector(tmp_path / "r.db") as store:
        store.add(MONDAY.timestamp() + 60, 1.0, "temperature", "C", "lab", "lab-t")
        populate(store, DAYS, RATE, seed=1, start=MONDAY, rooms=1, replace=True)
        assert len(series(store, "lab", "temperature")) == 1


def test_clear_by_location_sensor_type_and_time(tmp_path: Path) -> None:
    with SQLiteConnector(tmp_path / "r.db") as store:
        total = populate(store, DAYS, RATE, seed=1, start=MONDAY, rooms=2)
        per_device = len(series(store, "room1", "temperature"))
        assert store.clear(location="room1", sensor_type="temperature") == per_device
        assert len(series(store, "room1", "temperature")) == 0
        assert len(series(store, "room2", "temperature")) == per_device
        assert "room1-temperature-1" not in {s["device"] for s in store.sensors()}
        mid = MONDAY.timestamp() + DAYS * 86400 / 2
        gone = store.clear(location=["room2"], start=mid)
        assert 0 < gone < total
        assert series(store, "room2", "co2").max() < mid
        assert series(store, "room1", "co2").max() > mid
        left = store.count()
        assert store.clear() == left
        assert store.count() == 0 and store.sensors() == []
