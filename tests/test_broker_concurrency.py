"""The data broker checks every op first, then fetches them concurrently."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fades.broker import (
    AccessPolicy,
    DataBroker,
    Dataset,
    DataSummary,
    MemoryConnector,
    SQLiteConnector,
)
from fades.errors import AccessDenied, ConnectorError
from fades.task import DataOp, Selector

T0 = datetime(2024, 3, 4, tzinfo=UTC).timestamp()


class SlowConnector:
    """Waits at a barrier inside fetch, so fetches only finish if they run side by side."""

    def __init__(self, barrier: threading.Barrier, data: Dataset) -> None:
        self.barrier = barrier
        self.data = data
        self.spans: list[tuple[float, float, str]] = []
        self.selects: list[Selector] = []
        self._lock = threading.Lock()

    def fetch(self, select: Selector) -> Dataset:
        start = time.perf_counter()
        self.barrier.wait()
        time.sleep(0.02)
        end = time.perf_counter()
        with self._lock:
            self.spans.append((start, end, threading.current_thread().name))
            self.selects.append(select)
        return self.data

    def describe(self) -> list[DataSummary]:
        return [DataSummary("room1", "light", "lux", len(self.data), None, None)]


class FailingConnector:
    def fetch(self, select: Selector) -> Dataset:
        raise RuntimeError("disk on fire")

    def describe(self) -> list[DataSummary]:
        return []


def data(n: int = 10) -> Dataset:
    return Dataset.from_records(
        T0 + np.arange(n, dtype=float), np.ones(n), ["light"] * n, ["room1"] * n, ["d"] * n
    )


def ops(n: int, connector: str = "slow", **select: object) -> list[DataOp]:
    sel = Selector.model_validate(select)
    return [DataOp(name=f"op{i}", connector=connector, select=sel) for i in range(n)]


def test_ops_of_one_request_run_at_the_same_time() -> None:
    slow = SlowConnector(threading.Barrier(3, timeout=10), data())
    with DataBroker({"slow": slow}, AccessPolicy.allow_all(), max_workers=3) as broker:
        out, stats = broker.fetch("t", ops(3))
    assert sorted(out) == ["op0", "op1", "op2"]
    starts, ends = [s[0] for s in slow.spans], [s[1] for s in slow.spans]
    assert max(starts) < min(ends)  # all three were inside fetch together
    assert len({s[2] for s in slow.spans}) == 3
    recorded = sorted(stats.ops.values(), key=lambda s: s.started)
    assert max(s.started for s in recorded) < min(s.ended for s in recorded)


def test_stats_count_rows_and_bytes_per_op_and_in_total() -> None:
    mem = MemoryConnector(data(100))
    broker = DataBroker({"mem": mem}, AccessPolicy.allow_all())
    out, stats = broker.fetch("t", ops(2, "mem", last=40))
    assert [stats.ops[n].rows for n in ("op0", "op1")] == [40, 40]
    assert stats.ops["op0"].nbytes == out["op0"].nbytes == 40 * (8 + 8 + 3 * 2)
    assert stats.total_bytes == 2 * out["op0"].nbytes and stats.total_rows == 80
    assert stats.wall_seconds >= max(s.seconds for s in stats.ops.values())
    broker.close()


def test_the_executor_is_reused_across_requests() -> None:
    broker = DataBroker({"mem": MemoryConnector(data())}, AccessPolicy.allow_all(), max_workers=2)
    for _ in range(5):
        broker.fetch("t", ops(2, "mem"))
    pool = broker._pool
    broker.fetch("t", ops(1, "mem"))
    assert broker._pool is pool
    names = {t.name for t in threading.enumerate() if t.name.startswith("fades-drb")}
    assert 1 <= len(names) <= 2
    broker.close()
    broker.close()


def test_policy_is_checked_for_every_op_before_anything_is_fetched() -> None:
    slow = SlowConnector(threading.Barrier(1), data())
    policy = AccessPolicy.from_mapping(
        {"tenants": {"acme": {"locations": ["room1"], "sensor_types": "*"}}}
    )
    broker = DataBroker({"slow": slow}, policy)
    good = DataOp(name="ok", connector="slow", select=Selector(location="room1"))
    bad = DataOp(name="peek", connector="slow", select=Selector(location="room9"))
    with pytest.raises(AccessDenied, match=r"data op 'peek'.*room9"):
        broker.fetch("acme", [good, bad])
    assert slow.spans == []
    broker.close()


def test_an_unknown_connector_is_named_with_the_known_ones() -> None:
    broker = DataBroker({"sqlite": MemoryConnector(), "csv": MemoryConnector()})
    with pytest.raises(
        ConnectorError, match="unknown connector 'influx'; this node has: csv, sqlite"
    ):
        broker.check("t", ops(1, "influx"))
    broker.close()


def test_a_failing_connector_becomes_a_connector_error_naming_op_and_connector() -> None:
    broker = DataBroker({"mem": MemoryConnector(data()), "bad": FailingConnector()})
    req = [*ops(1, "mem"), DataOp(name="broken", connector="bad")]
    with pytest.raises(ConnectorError) as err:
        broker.fetch("t", req)
    assert "data op 'broken': connector 'bad' failed: RuntimeError: disk on fire" in str(err.value)
    assert err.value.context["op"] == "broken"
    assert isinstance(err.value.__cause__, RuntimeError)
    broker.close()


def test_last_seconds_of_all_ops_share_one_now() -> None:
    slow = SlowConnector(threading.Barrier(2, timeout=10), data())
    broker = DataBroker({"slow": slow}, max_workers=2)
    now = datetime.fromtimestamp(T0 + 100, UTC)
    broker.fetch("t", ops(2, last_seconds=30), now=now)
    assert {s.since for s in slow.selects} == {datetime.fromtimestamp(T0 + 70, UTC)}
    assert all(s.last_seconds is None for s in slow.selects)
    broker.close()


def test_sqlite_ops_fetch_concurrently_from_one_store(tmp_path: Path) -> None:
    store = SQLiteConnector(tmp_path / "n.db")
    for room in ("room1", "room2", "room3", "room4"):
        store.write_columns(T0 + np.arange(5000.0), np.ones(5000), "light", room, room, "lux")
    broker = DataBroker({"sqlite": store}, max_workers=4)
    req = [DataOp(name=f"r{i}", select=Selector(location=f"room{i}")) for i in range(1, 5)]
    out, _ = broker.fetch("t", req)
    assert {k: len(v) for k, v in out.items()} == {f"r{i}": 5000 for i in range(1, 5)}
    assert sum(len(v) for v in broker.describe().values()) == 4
    broker.close()
    store.close()


def test_describe_can_be_limited_to_what_a_tenant_may_see() -> None:
    slow = SlowConnector(threading.Barrier(1), data())
    policy = AccessPolicy.from_mapping(
        {"tenants": {"acme": {"locations": ["room2"], "sensor_types": "*"}}}
    )
    broker = DataBroker({"slow": slow}, policy)
    assert len(broker.describe()["slow"]) == 1
    assert broker.describe("acme") == {"slow": []}
    broker.close()
