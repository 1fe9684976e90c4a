"""The CSV connector and the in-memory connector answer the same selectors as SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fades.broker import CSVConnector, MemoryConnector, SQLiteConnector, open_connector
from fades.errors import ConnectorError
from fades.task import Selector

ROWS = [
    ("2024-03-04T09:00:00Z", 21.0, "temperature", "°C", "room1", "room1-temperature-1"),
    ("2024-03-04T09:00:10", 40.0, "humidity", "%", "room1", "room1-humidity-1"),
    ("1709542820", 22.0, "temperature", "°C", "room2", "room2-temperature-1"),
    ("2024-03-04T08:59:50+00:00", 20.5, "temperature", "°C", "room1", "room1-temperature-1"),
]


def write_csv(path: Path, header: str = "ts,value,sensor_type,unit,location,device") -> Path:
    lines = [header] + [",".join(str(c) for c in r) for r in ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_accepts_epoch_and_iso_timestamps_and_sorts_by_time(tmp_path: Path) -> None:
    ds = CSVConnector(write_csv(tmp_path / "r.csv")).fetch(Selector())
    t0 = datetime(2024, 3, 4, 9, tzinfo=UTC).timestamp()
    assert list(ds.ts - t0) == [-10.0, 0.0, 10.0, 20.0]
    assert list(ds.value) == [20.5, 21.0, 40.0, 22.0]


def test_csv_answers_selectors_like_the_sqlite_store(tmp_path: Path) -> None:
    csv_conn = CSVConnector(write_csv(tmp_path / "r.csv"))
    store = SQLiteConnector(tmp_path / "s.db")
    store.write(csv_conn.load())
    since = datetime(2024, 3, 4, 9, tzinfo=UTC)
    for sel in (
        Selector(),
        Selector(location="room1"),
        Selector(sensor_type="temperature", since=since),
        Selector(last=2),
        Selector(device=["room2-temperature-1", "room1-humidity-1"]),
    ):
        a, b = csv_conn.fetch(sel), store.fetch(sel)
        assert np.array_equal(a.ts, b.ts) and np.array_equal(a.value, b.value), sel
        assert a.column("device") == b.column("device")
        assert a.units == b.units


def test_csv_maps_other_headers_and_fills_defaults(tmp_path: Path) -> None:
    p = tmp_path / "lab.csv"
    p.write_text("time,reading\n2024-03-04 09:00:00,1.5\n2024-03-04 09:01:00,2.5\n")
    conn = CSVConnector(
        p,
        columns={"ts": "time", "value": "reading"},
        defaults={"sensor_type": "light", "unit": "lux", "location": "lab", "device": "lab-1"},
    )
    ds = conn.fetch(Selector(location="lab"))
    assert list(ds.value) == [1.5, 2.5] and ds.units == {"light": "lux"}
    assert conn.describe()[0].rows == 2


def test_csv_names_a_missing_column_and_a_bad_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("ts,value\n1,2\n")
    with pytest.raises(ConnectorError, match="no column 'sensor_type'"):
        CSVConnector(p).fetch(Selector())
    q = write_csv(tmp_path / "q.csv")
    q.write_text(q.read_text() + "yesterday,1,t,u,l,d\n")
    with pytest.raises(ConnectorError, match="line 6"):
        CSVConnector(q).fetch(Selector())
    with pytest.raises(ConnectorError, match="cannot read"):
        CSVConnector(tmp_path / "missing.csv").fetch(Selector())


def test_csv_is_parsed_once_and_cached(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "r.csv")
    conn = open_connector("csv", path=p)
    assert isinstance(conn, CSVConnector)
    first = conn.load()
    p.unlink()
    assert conn.load() is first and len(conn.fetch(Selector(location="room2"))) == 1


def test_memory_connector_takes_single_readings_and_datasets() -> None:
    mem = MemoryConnector()
    mem.add(2.0, 1.0, "light", "lux", "r1", "r1-light")
    mem.add(1.0, 5.0, "audio", "dB", "r2", "r2-audio")
    ds = mem.fetch(Selector())
    assert list(ds.ts) == [1.0, 2.0] and ds.column("location") == ["r2", "r1"]
    mem.extend(MemoryConnector.from_records([3.0], [7.0], ["co2"], ["r1"], ["r1-co2"]).snapshot())
    assert mem.fetch(Selector(location="r1")).column("sensor_type") == ["light", "co2"]
    assert mem.count() == 3
    assert {(s.location, s.sensor_type) for s in mem.describe()} == {
        ("r1", "light"),
        ("r1", "co2"),
        ("r2", "audio"),
    }
