"""The synthetic office testbed and the river occupancy loader."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fades.broker import SQLiteConnector
from fades.errors import DatasetError
from fades.task import Selector
from fades.testbed import (
    SENSOR_TYPES,
    generate_office,
    iter_office,
    load_river_occupancy,
    populate,
    read_river_occupancy,
)

MONDAY = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday


@pytest.fixture(scope="module")
def fortnight() -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Two weeks at one reading per minute: {room: {sensor_type: (ts, value)}}."""
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for s in generate_office(14, 60.0, seed=3, start=MONDAY):
        out.setdefault(s.location, {})[s.sensor_type] = (s.ts, s.value)
    return out


def hours(ts: np.ndarray) -> np.ndarray:
    return ((ts - MONDAY.timestamp()) % 86400) / 3600


def weekday(ts: np.ndarray) -> np.ndarray:
    return ((ts - MONDAY.timestamp()) // 86400).astype(int) % 7


def test_the_same_seed_gives_the_same_readings_and_another_seed_differs() -> None:
    a = generate_office(1, 30.0, seed=7, start=MONDAY)
    b = generate_office(1, 30.0, seed=7, start=MONDAY)
    c = generate_office(1, 30.0, seed=8, start=MONDAY)
    assert all(
        np.array_equal(x.value, y.value) and np.array_equal(x.ts, y.ts)
        for x, y in zip(a, b, strict=True)
    )
    assert any(not np.array_equal(x.value, y.value) for x, y in zip(a, c, strict=True))


def test_five_rooms_with_one_device_per_sensor_type_at_the_given_rate() -> None:
    series = generate_office(1, 10.0, seed=0, start=MONDAY)
    assert len(series) == 5 * len(SENSOR_TYPES)
    assert {s.location for s in series} == {f"room{i}" for i in range(1, 6)}
    assert "room1-temperature-1" in {s.device for s in series}
    assert {"humidity", "temperature", "light", "audio", "proximity", "co2", "occupancy"} == set(
        SENSOR_TYPES
    )
    for s in series:
        assert len(s) == 8640
        assert bool(np.all(np.diff(s.ts) == 10.0))
        assert MONDAY.timestamp() <= s.ts[0] < MONDAY.timestamp() + 10


def test_chunks_cover_the_period_without_gaps_or_overlaps() -> None:
    parts = [p for p in iter_office(3, 60.0, seed=1, start=MONDAY, chunk_days=0.7)]
    dev = [p for p in parts if p.device == "room2-light-1"]
    ts = np.concatenate([p.ts for p in dev])
    assert len(ts) == 3 * 1440 and bool(np.all(np.diff(ts) == 60.0))


def test_light_is_higher_in_working_hours_than_at_night(fortnight: dict) -> None:
    for room, sensors in fortnight.items():
        ts, light = sensors["light"]
        h, wd = hours(ts), weekday(ts)
        work = light[(wd < 5) & (h >= 10) & (h < 16)]
        night = light[(h < 5) | (h >= 22)]
        assert work.mean() > 5 * max(night.mean(), 1.0), room


def test_nobody_is_in_the_office_at_weekends_or_at_night(fortnight: dict) -> None:
    for sensors in fortnight.values():
        ts, occ = sensors["occupancy"]
        h, wd = hours(ts), weekday(ts)
        assert occ[wd >= 5].sum() == 0
        assert occ[(h < 6) | (h >= 21)].sum() == 0
        assert 0.1 < occ[(wd < 5) & (h >= 9) & (h < 16)].mean() <= 1.0


def test_occupancy_drives_co2_audio_and_proximity(fortnight: dict) -> None:
    for sensors in fortnight.values():
        occ = sensors["occupancy"][1].astype(bool)
        assert sensors["co2"][1][occ].mean() > sensors["co2"][1][~occ].mean() + 100
        assert sensors["audio"][1][occ].mean() > sensors["audio"][1][~occ].mean() + 8
        assert sensors["proximity"][1][occ].mean() > sensors["proximity"][1][~occ].mean() + 1


def test_lunch_time_is_quieter_than_the_morning(fortnight: dict) -> None:
    occ = np.concatenate([s["occupancy"][1] for s in fortnight.values()])
    ts = np.concatenate([s["occupancy"][0] for s in fortnight.values()])
    h, wd = hours(ts), weekday(ts)
    morning = occ[(wd < 5) & (h >= 9.5) & (h < 11.5)].mean()
    lunch = occ[(wd < 5) & (h >= 12.5) & (h < 13)].mean()
    assert lunch < morning


def test_values_stay_in_physical_ranges(fortnight: dict) -> None:
    for sensors in fortnight.values():
        assert sensors["temperature"][1].min() > 15 and sensors["temperature"][1].max() < 28
        assert sensors["humidity"][1].min() >= 0 and sensors["humidity"][1].max() <= 100
        assert sensors["co2"][1].min() >= 350 and sensors["light"][1].min() >= 0
        assert set(np.unique(sensors["occupancy"][1])) <= {0.0, 1.0}


def test_populate_writes_the_testbed_into_a_store_and_reports_progress(tmp_path: Path) -> None:
    store = SQLiteConnector(tmp_path / "tb.db")
    calls: list[tuple[int, int]] = []
    n = populate(store, 2, 60.0, seed=1, start=MONDAY, progress=lambda d, t: calls.append((d, t)))
    assert n == store.count() == 2 * 1440 * 5 * len(SENSOR_TYPES)
    assert calls[-1] == (n, n) and [c[0] for c in calls] == sorted(c[0] for c in calls)
    ds = store.fetch(Selector(location="room3", sensor_type="co2"))
    assert len(ds) == 2880 and ds.units == {"co2": "ppm"}


def test_unknown_sensor_types_and_bad_sizes_are_refused() -> None:
    with pytest.raises(DatasetError, match="unknown testbed sensor type"):
        generate_office(1, 10.0, sensor_types=["radar"])
    with pytest.raises(DatasetError, match="must be positive"):
        generate_office(0, 10.0)


def test_river_occupancy_loads_four_sensor_types_at_one_location(tmp_path: Path) -> None:
    ds = read_river_occupancy("lab")
    assert len(ds) == 509 * 4
    assert ds.labels["sensor_type"] == ["co2", "humidity", "light", "temperature"]
    assert ds.labels["location"] == ["lab"]
    assert ds.units["co2"] == "ppm" and ds.units["temperature"] == "°C"
    assert bool(np.all(np.diff(ds.ts) >= 0))
    store = SQLiteConnector(tmp_path / "lab.db")
    assert load_river_occupancy(store, location="office") == 509 * 4
    temps = store.fetch(Selector(location="office", sensor_type="temperature"))
    assert len(temps) == 509 and 15 < temps.value.mean() < 30
    assert len(store.fetch(Selector(sensor_type="occupancy"))) == 0


def test_river_light_proxy_label_is_opt_in() -> None:
    ds = read_river_occupancy("lab", occupancy_light_lux=300.0)
    assert "occupancy" in ds.labels["sensor_type"] and len(ds) == 509 * 5


def test_river_missing_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "river", None)
    with pytest.raises(DatasetError, match=r"pip install 'fades\[datasets\]'"):
        read_river_occupancy()
