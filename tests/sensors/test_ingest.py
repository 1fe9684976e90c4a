"""MQTT/NATS sensor ingest into the node's SQLite store, against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from fades.broker import DataBroker, SQLiteConnector
from fades.fabric import EmbeddedNats, connect
from fades.sensors.ingest import Ingestor
from fades.sensors.simulator import SensorSimulator
from fades.task import DataOp, Selector
from fades.testbed import populate


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def with_ingest(
    server: EmbeddedNats,
    store: SQLiteConnector,
    body: Callable[[Any, Ingestor], Awaitable[None]],
    *,
    node: str = "edge1",
    batch_s: float = 0.05,
) -> Ingestor:
    """Run ``body(nc, ingestor)`` with a started Ingestor; stop it afterwards."""
    holder: list[Ingestor] = []

    async def main() -> None:
        nc = await connect(server.url)
        ingest = await Ingestor(nc, store, node, batch_s=batch_s).start()
        holder.append(ingest)
        try:
            await body(nc, ingest)
        finally:
            await ingest.stop()
            await nc.close()

    asyncio.run(main())
    return holder[0]


def test_mqtt_readings_land_in_the_store_and_a_last_minute_selection_sees_them(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    store = SQLiteConnector(tmp_path / "readings.db")
    # history that ended ten minutes ago: a 60 s window must not see it
    history_start = datetime.now(UTC) - timedelta(days=0.05, minutes=10)
    old_rows = populate(store, 0.05, 60.0, seed=1, start=history_start, rooms=2)
    sim = SensorSimulator(
        "127.0.0.1", nats_server.mqtt_port or 0, "edge1", rooms=2, rate_s=0.2, seed=3
    )
    published: list[int] = []

    async def body(nc: Any, ingest: Ingestor) -> None:
        published.append(await asyncio.to_thread(sim.run, 1.2))
        await until(lambda: ingest.stats["written"] >= published[0])

    ingest = with_ingest(nats_server, store, body)
    n = published[0]
    assert ingest.stats["received"] == ingest.stats["written"] == n > 0
    assert ingest.stats["rejected"] == 0 and ingest.stats["last_error"] is None
    assert store.count() == old_rows + n

    broker = DataBroker({"sqlite": store})
    window = Selector(location="room1", sensor_type="temperature", last_seconds=60)
    data, _ = broker.fetch("facilities", [DataOp(name="t", select=window)])
    live = data["t"]
    assert 5 <= len(live) <= 8  # 1.2 s at one reading per 0.2 s
    assert bool(np.all(live.ts > time.time() - 10))  # arrived seconds ago
    assert live.labels["device"] == ["room1-temperature-1"] and live.units["temperature"] == "°C"
    assert bool(np.all((live.value > 10) & (live.value < 30)))
    everything = store.fetch(Selector(location="room1", sensor_type="temperature"))
    assert len(everything) > len(live)  # the history is there, outside the window
    summary = {(d.location, d.sensor_type): d for d in store.describe()}
    assert summary[("room2", "co2")].last_ts > time.time() - 10
    broker.close()
    store.close()


BAD = [
    ("sensors.edge1.room1.co2", b"not json"),
    ("sensors.edge1.room1.co2", b'{"ts": 1700000000}'),
    ("sensors.edge1.room1.co2", b'{"value": "hot"}'),
    ("sensors.edge1.room1.co2", b"NaN"),
    ("sensors.edge1.room1.co2", b"true"),
    ("sensors.edge1.room1.co2", b'{"value": 1, "ts": "yesterday"}'),
    ("sensors.edge1.room1.co2", b'{"value": 1, "ts": 1700000000000}'),  # milliseconds
    ("sensors.edge1.room1.co2.extra", b"1"),
    ("sensors.edge1.room1.temperature", b'{"value": 70, "unit": "F"}'),  # stored as °C
]


def test_malformed_payloads_are_rejected_and_counted_while_good_ones_land(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    store = SQLiteConnector(tmp_path / "readings.db")
    now = time.time()
    good_first = json.dumps({"ts": now - 1, "value": 21.5, "unit": "°C"}).encode()

    async def body(nc: Any, ingest: Ingestor) -> None:
        await nc.publish("sensors.edge1.room1.temperature", good_first)
        await nc.flush()
        await until(lambda: ingest.stats["written"] == 1)
        for subject, data in BAD:
            await nc.publish(subject, data)
        await nc.publish("sensors.edge1.room1.co2", b"612")  # a bare number: ts = arrival
        await nc.publish("sensors.edge1.room2.light", b'{"value": 300, "device": "lux-7"}')
        await nc.publish("sensors.other.room1.co2", b"500")  # another node's: not ours
        await nc.flush()
        await until(lambda: ingest.stats["written"] + ingest.stats["rejected"] >= 3 + len(BAD))

    ingest = with_ingest(nats_server, store, body)
    assert ingest.stats["rejected"] == len(BAD)
    assert ingest.stats["written"] == 3
    assert ingest.stats["received"] == 3 + len(BAD)
    assert "unit 'F' differs" in str(ingest.stats["last_error"])
    sensors = {(s["location"], s["sensor_type"]): s for s in store.sensors()}
    assert set(sensors) == {("room1", "temperature"), ("room1", "co2"), ("room2", "light")}
    assert sensors[("room1", "co2")]["unit"] == "ppm"  # the testbed unit of the type
    assert sensors[("room2", "light")]["device"] == "lux-7"
    co2 = store.fetch(Selector(location="room1", sensor_type="co2"))
    assert co2.value.tolist() == [612.0] and abs(co2.ts[0] - time.time()) < 10
    temp = store.fetch(Selector(location="room1", sensor_type="temperature"))
    assert temp.value.tolist() == [21.5] and temp.ts[0] == now - 1
    store.close()


def test_one_unstorable_sensor_does_not_take_the_batch_down(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    store = SQLiteConnector(tmp_path / "readings.db")

    async def body(nc: Any, ingest: Ingestor) -> None:
        await nc.publish("sensors.edge1.room3.audio", b"40")
        await nc.flush()
        await until(lambda: ingest.stats["written"] == 1)  # the ingest knows the sensors now
        # another writer registers room4's humidity with another unit behind its back
        store.add(time.time() - 5, 1.0, "humidity", "g/m3", "room4", "room4-humidity")
        await nc.publish("sensors.edge1.room4.humidity", b'{"value": 40, "unit": "%"}')
        await nc.publish("sensors.edge1.room4.light", b'{"value": 250}')
        await nc.flush()
        await until(lambda: ingest.stats["written"] + ingest.stats["rejected"] >= 3)

    ingest = with_ingest(nats_server, store, body, batch_s=0.3)
    assert ingest.stats["written"] == 2 and ingest.stats["rejected"] == 1
    assert "room4-humidity" in str(ingest.stats["last_error"])
    assert len(store.fetch(Selector(location="room4", sensor_type="light"))) == 1
    store.close()


def test_stop_writes_what_is_still_buffered(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    store = SQLiteConnector(tmp_path / "readings.db")
    t0 = time.time() - 100

    async def body(nc: Any, ingest: Ingestor) -> None:
        for i in range(500):
            await nc.publish(
                "sensors.edge1.room1.light", f'{{"ts": {t0 + i}, "value": {i}}}'.encode()
            )
        await nc.flush()

    ingest = with_ingest(nats_server, store, body, batch_s=60.0)  # no periodic write in time
    assert ingest.stats["written"] == 500 and store.count() == 500
    store.close()


# --- a burst --------------------------------------------------------------------------------
# (the ingest rate itself is measured by benchmarks/bench_ingest.py, not asserted here)
def test_a_burst_of_readings_lands_exactly_once_with_its_values(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    n = 5_000
    store = SQLiteConnector(tmp_path / "readings.db")
    t0 = round(time.time()) - 60.0
    sent = {
        (f"room{i % 5 + 1}", t0 + i * 1e-3, 20 + (i % 97) / 10): f"room{i % 5 + 1}-temperature"
        for i in range(n)
    }

    async def body(nc: Any, ingest: Ingestor) -> None:
        for (room, ts, value), device in sent.items():
            payload = {"ts": ts, "value": value, "device": device, "unit": "°C"}
            await nc.publish(f"sensors.edge1.{room}.temperature", json.dumps(payload).encode())
        await nc.flush()
        await until(lambda: ingest.stats["written"] >= n, timeout=120)

    ingest = with_ingest(nats_server, store, body, batch_s=0.2)
    assert ingest.stats["received"] == ingest.stats["written"] == n
    assert ingest.stats["rejected"] == 0
    got = []
    for room in sorted({room for room, _, _ in sent}):
        ds = store.fetch(Selector(location=room, sensor_type="temperature"))
        got += [(room, float(t), float(v)) for t, v in zip(ds.ts, ds.value, strict=True)]
    assert len(got) == n  # none lost, none twice
    assert {(r, round(t, 6), v) for r, t, v in got} == {(r, round(t, 6), v) for r, t, v in sent}
    store.close()
