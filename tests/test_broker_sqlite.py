"""The SQLite store: schema, bulk writes, selectors, thread safety."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fades.broker import Connector, Dataset, SQLiteConnector, open_connector
from fades.errors import ConnectorError
from fades.task import Selector

T0 = datetime(2024, 3, 4, tzinfo=UTC).timestamp()


@pytest.fixture
def store(tmp_path: Path) -> SQLiteConnector:
    s = SQLiteConnector(tmp_path / "node.db")
    ts = T0 + np.arange(100) * 10.0
    for room in ("room1", "room2"):
        for stype, unit in (("temperature", "°C"), ("humidity", "%")):
            s.write_columns(ts, np.arange(100, dtype=float), stype, room, f"{room}-{stype}-1", unit)
    return s


def test_store_is_a_connector_in_wal_mode_with_a_normalised_schema(tmp_path: Path) -> None:
    s = SQLiteConnector(tmp_path / "a.db")
    assert isinstance(s, Connector)
    con = sqlite3.connect(tmp_path / "a.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sensors", "readings"} <= tables
    cols = [r[1] for r in con.execute("PRAGMA table_info(readings)")]
    assert cols == ["sensor_id", "ts", "value"]


def test_bulk_write_registers_one_sensor_per_device(store: SQLiteConnector) -> None:
    assert store.count() == 400
    assert len(store.sensors()) == 4


def test_fetch_everything_returns_all_rows_sorted_by_time(store: SQLiteConnector) -> None:
    ds = store.fetch(Selector())
    assert len(ds) == 400
    assert bool(np.all(np.diff(ds.ts) >= 0))
    assert ds.labels["location"] == ["room1", "room2"]
    assert ds.units == {"temperature": "°C", "humidity": "%"}


def test_fetch_filters_by_type_location_and_device(store: SQLiteConnector) -> None:
    ds = store.fetch(Selector(sensor_type="temperature", location=["room2"]))
    assert len(ds) == 100
    assert set(ds.column("device")) == {"room2-temperature-1"}
    assert ds.units == {"temperature": "°C"}
    assert len(store.fetch(Selector(device="room1-humidity-1"))) == 100
    assert len(store.fetch(Selector(location="nowhere"))) == 0


def test_time_window_is_half_open(store: SQLiteConnector) -> None:
    since = datetime.fromtimestamp(T0 + 100, UTC)
    until = datetime.fromtimestamp(T0 + 200, UTC)
    ds = store.fetch(Selector(device="room1-temperature-1", since=since, until=until))
    assert list(ds.ts - T0) == [100.0 + 10 * i for i in range(10)]


def test_last_seconds_is_anchored_at_now(store: SQLiteConnector) -> None:
    ds = store.fetch(Selector(device="room1-temperature-1", last_seconds=50), now=T0 + 990)
    assert list(ds.ts - T0) == [940.0, 950.0, 960.0, 970.0, 980.0, 990.0]


def test_last_returns_the_newest_readings_of_the_whole_selection(
    store: SQLiteConnector,
) -> None:
    ds = store.fetch(Selector(location="room1", last=4))
    assert list(ds.ts - T0) == [980.0, 980.0, 990.0, 990.0]
    assert sorted(ds.column("sensor_type")[-2:]) == ["humidity", "temperature"]
    ds = store.fetch(Selector(device="room1-temperature-1", last=3))
    assert list(ds.value) == [97.0, 98.0, 99.0]


def test_rewriting_a_reading_replaces_its_value(store: SQLiteConnector) -> None:
    store.add(T0, 42.0, "temperature", "°C", "room1", "room1-temperature-1")
    assert store.count() == 400
    ds = store.fetch(Selector(device="room1-temperature-1", last=100))
    assert ds.value[0] == 42.0


def test_categoricals_may_be_sequences(tmp_path: Path) -> None:
    s = SQLiteConnector(tmp_path / "b.db")
    s.write_columns(
        [T0, T0 + 1, T0 + 2],
        [1.0, 2.0, 3.0],
        ["light", "light", "audio"],
        ["r1", "r2", "r1"],
        ["r1-l", "r2-l", "r1-a"],
        ["lux", "lux", "dB"],
    )
    ds = s.fetch(Selector(location="r1"))
    assert ds.column("sensor_type") == ["light", "audio"]
    assert {d.sensor_type: d.rows for d in s.describe() if d.location == "r1"} == {
        "audio": 1,
        "light": 1,
    }


def test_a_sensor_keeps_its_unit(store: SQLiteConnector) -> None:
    with pytest.raises(ConnectorError, match="unit"):
        store.add(T0, 1.0, "temperature", "K", "room1", "room1-temperature-1")


def test_write_of_a_dataset_round_trips(store: SQLiteConnector, tmp_path: Path) -> None:
    ds = store.fetch(Selector())
    copy = SQLiteConnector(tmp_path / "copy.db")
    assert copy.write(ds) == len(ds)
    again = copy.fetch(Selector())
    assert np.array_equal(again.ts, ds.ts) and again.labels == ds.labels


def test_describe_summarises_each_location_and_sensor_type(store: SQLiteConnector) -> None:
    summaries = store.describe()
    assert len(summaries) == 4
    first = summaries[0]
    assert (first.location, first.rows, first.first_ts, first.last_ts) == (
        "room1",
        100,
        T0,
        T0 + 990,
    )


def test_many_threads_can_fetch_and_write_at_once(store: SQLiteConnector) -> None:
    errors: list[BaseException] = []
    sizes: list[int] = []

    def reader() -> None:
        try:
            for _ in range(20):
                sizes.append(len(store.fetch(Selector(location="room1"))))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def writer() -> None:
        try:
            store.write_columns(
                T0 + 5000 + np.arange(50.0), np.ones(50), "co2", "room3", "c", "ppm"
            )
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)] + [
        threading.Thread(target=writer)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(sizes) == {200}
    assert store.count() == 450


def test_open_connector_builds_by_kind_and_names_known_kinds(tmp_path: Path) -> None:
    s = open_connector("sqlite", path=tmp_path / "c.db")
    assert isinstance(s, SQLiteConnector)
    with pytest.raises(ConnectorError, match="known kinds: csv, memory, packets, sqlite"):
        open_connector("influx")
    with pytest.raises(ConnectorError, match="bad options"):
        open_connector("sqlite", nonsense=1)


def test_empty_store_fetches_an_empty_dataset(tmp_path: Path) -> None:
    ds = SQLiteConnector(tmp_path / "e.db").fetch(Selector(last=5))
    assert len(ds) == 0 and isinstance(ds, Dataset)
