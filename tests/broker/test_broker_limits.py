"""The broker's limits: oversized retrievals are refused by a bounded count before any row is
fetched, and a retrieval that overruns its time limit is interrupted and leaves no lock behind.

Real SQLite files in tmp_path; the sizes are chosen so that fetching would cost far more memory
than the refusal is allowed to (measured with tracemalloc, which sees numpy's buffers).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fades.broker import DataBroker, Dataset, DataSummary, MemoryConnector, SQLiteConnector
from fades.broker.base import ROW_BYTES, BoundedConnector, FetchLimits
from fades.errors import BrokerError, InputTooLarge, RetrievalTimeLimitExceeded
from fades.task import DataOp, Selector

T0 = 1_700_000_000.0
ROWS = 400_000  # per sensor; two sensors


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "readings.db"
    with SQLiteConnector(path) as store:
        ts = T0 + np.arange(ROWS, dtype=np.float64)
        for room in ("room1", "room2"):
            store.write_columns(ts, np.ones(ROWS), "temperature", room, f"{room}-t", "C")
    return path


def op(name: str = "all", **select: Any) -> DataOp:
    return DataOp(name=name, select=Selector(**select))


def peak_bytes(call: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        call()
    except BrokerError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_the_connectors_are_bounded(big_db: Path) -> None:
    with SQLiteConnector(big_db) as store:
        assert isinstance(store, BoundedConnector)
    assert isinstance(MemoryConnector(), BoundedConnector)


def test_a_bounded_count_stops_after_the_cap(big_db: Path) -> None:
    with SQLiteConnector(big_db) as store:
        assert store.count_at_most(Selector(), 1000) == 1001
        assert store.count_at_most(Selector(location="room1"), 10**9) == ROWS
        assert store.count_at_most(Selector(last=5), 1000) == 5
        assert store.count_at_most(Selector(since=_dt(T0 + ROWS - 10)), 1000) == 20
        assert store.count_at_most(Selector(location="nowhere"), 10) == 0


def _dt(ts: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


def test_too_many_rows_are_refused_before_they_are_fetched(big_db: Path) -> None:
    with SQLiteConnector(big_db) as store, DataBroker({"sqlite": store}) as broker:
        lim = FetchLimits(max_rows=100_000)
        full = 2 * ROWS * ROW_BYTES  # what fetching would hold: 8.8 MB
        with pytest.raises(InputTooLarge) as err:
            broker.fetch("t", [op()], limits=lim)
        assert err.value.limit == "max_rows" and err.value.value == 100_000
        assert "max_rows" in str(err.value) and "100,000" in str(err.value)
        assert peak_bytes(lambda: broker.fetch("t", [op()], limits=lim)) < full / 20
        # the same selection within the limit is served
        ds, stats = broker.fetch("t", [op(location="room1", last=1000)], limits=lim)
        assert len(ds["all"]) == 1000 and stats.total_rows == 1000


def test_rows_of_all_operations_count_together(big_db: Path) -> None:
    with SQLiteConnector(big_db) as store, DataBroker({"sqlite": store}) as broker:
        ops = [op(f"r{i}", location="room1") for i in range(3)]  # 3 x 400k rows
        with pytest.raises(InputTooLarge, match="max_rows"):
            broker.fetch("t", ops, limits=FetchLimits(max_rows=1_000_000))
        ds, _ = broker.fetch("t", ops[:2], limits=FetchLimits(max_rows=1_000_000))
        assert [len(d) for d in ds.values()] == [ROWS, ROWS]


def test_the_input_may_not_exceed_the_byte_limit_and_the_error_names_it(big_db: Path) -> None:
    with SQLiteConnector(big_db) as store, DataBroker({"sqlite": store}) as broker:
        lim = FetchLimits(max_bytes=2**20, bytes_limit="memory_mib")
        with pytest.raises(InputTooLarge) as err:
            broker.fetch("t", [op(location="room1")], limits=lim)
        assert err.value.limit == "memory_mib" and err.value.value == 2**20
        assert "memory cap (memory_mib)" in str(err.value) and "1 MiB" in str(err.value)
        ok, _ = broker.fetch("t", [op(location="room1", last=2**20 // ROW_BYTES)], limits=lim)
        assert len(ok["all"]) == 2**20 // ROW_BYTES


def test_too_many_operations_are_refused_at_check() -> None:
    broker = DataBroker({"sqlite": MemoryConnector()}, limits=FetchLimits(max_ops=4))
    ops = [op(f"d{i}") for i in range(5)]
    with pytest.raises(InputTooLarge, match=r"5 data operations.*at most 4.*max_data_ops"):
        broker.check("t", ops)
    broker.check("t", ops[:4])


def test_a_memory_connector_is_counted_before_it_is_copied() -> None:
    ts = T0 + np.arange(300_000, dtype=np.float64)
    mem = MemoryConnector(
        Dataset(
            ts=ts,
            value=np.ones_like(ts),
            codes={c: np.zeros(len(ts), np.uint16) for c in ("sensor_type", "location", "device")},
            labels={"sensor_type": ["t"], "location": ["room1"], "device": ["d"]},
        )
    )
    broker = DataBroker({"mem": mem})
    mop = DataOp(name="m", connector="mem")
    with pytest.raises(InputTooLarge, match="max_rows"):
        broker.fetch("t", [mop], limits=FetchLimits(max_rows=1000))
    assert mem.count_at_most(Selector(last=10), 5) == 10
    ds, _ = broker.fetch("t", [mop.model_copy(update={"select": Selector(last=10)})])
    assert len(ds["m"]) == 10


def test_a_fetch_past_its_row_cap_stops_reading(big_db: Path) -> None:
    with SQLiteConnector(big_db) as store:
        with pytest.raises(InputTooLarge):
            store.fetch(Selector(), max_rows=1000)
        # 'last' keeps only the newest rows: its own cap decides, not the rows scanned
        assert len(store.fetch(Selector(last=500), max_rows=1000)) == 500


def test_last_over_many_sensors_keeps_the_newest_rows(tmp_path: Path) -> None:
    with SQLiteConnector(tmp_path / "r.db") as store:
        for i in range(6):
            ts = T0 + i + np.arange(0, 600, 6, dtype=np.float64)  # interleaved sensors
            store.write_columns(ts, np.full(len(ts), float(i)), "t", "room", f"d{i}", "C")
        ds = store.fetch(Selector(last=40))
        assert len(ds) == 40
        assert list(ds.ts) == sorted(ds.ts)
        assert ds.ts[0] == T0 + 600 - 40  # exactly the newest 40 timestamps of all sensors


def _no_reader_holds_the_file(path: Path) -> None:
    """A writer commits at once, and a TRUNCATE checkpoint finds no reader in the WAL."""
    con = sqlite3.connect(path, timeout=0.5)
    try:
        with con:
            con.execute("INSERT OR REPLACE INTO readings VALUES (1, 1.0, 1.0)")
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        con.close()


def test_a_retrieval_past_its_time_limit_is_interrupted_and_leaves_no_lock(
    big_db: Path, tmp_path: Path
) -> None:
    path = tmp_path / "copy.db"
    src, dst = sqlite3.connect(big_db), sqlite3.connect(path)
    src.backup(dst)
    src.close()
    dst.close()
    with SQLiteConnector(path) as store, DataBroker({"sqlite": store}) as broker:
        lim = FetchLimits(seconds=0.001)
        for ops in ([op()], [op("a"), op("b", location="room2")]):
            t0 = time.monotonic()
            with pytest.raises(RetrievalTimeLimitExceeded, match=r"retrieval_seconds=0\.001"):
                broker.fetch("t", ops, limits=lim)
            assert time.monotonic() - t0 < 5  # interrupted, not run to the end
            _no_reader_holds_the_file(path)
        # the same broker and store serve the next request
        ds, _ = broker.fetch("t", [op(location="room1", last=3)])
        assert len(ds["all"]) == 3


class Stuck:
    """A third-party connector without bounds: its fetch blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def fetch(self, select: Selector) -> Dataset:
        self.release.wait(60)
        return Dataset.empty()

    def describe(self) -> list[DataSummary]:
        return []


def test_the_broker_stops_waiting_for_an_unbounded_connector_at_the_deadline() -> None:
    stuck = Stuck()
    broker = DataBroker({"ext": stuck})
    try:
        t0 = time.monotonic()
        with pytest.raises(RetrievalTimeLimitExceeded):
            broker.fetch("t", [DataOp(name="x", connector="ext")], limits=FetchLimits(seconds=0.2))
        assert time.monotonic() - t0 < 10
    finally:
        stuck.release.set()
        broker.close()


def test_limits_refuse_nonsense_values() -> None:
    for bad in ({"max_rows": 0}, {"max_ops": -1}, {"seconds": float("nan")}, {"seconds": 0}):
        with pytest.raises(ValueError):
            FetchLimits(**bad)
