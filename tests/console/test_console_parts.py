"""The console's parts on their own (no browser, no cluster): checkpoint headers, the sensor
window and its per-tenant filter, and the in-process API call's guard."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest

from fades.bus.memory import MemoryBus
from fades.console.inproc import call
from fades.console.live import _sensor_filter
from fades.console.sensors import POINTS, SensorFeed
from fades.console.stateful import peek
from fades.state.base import Checkpoint
from fades.state.seal import seal


def test_peek_reads_a_sealed_checkpoints_header_and_state_size() -> None:
    now = time.time()
    ck = Checkpoint("t1", "sha256:" + "a" * 64, "edge1", 7, b"x" * 321, now)
    got = peek(seal(b"k" * 32, ck))
    assert got == {"seq": 7, "created_at": now, "written_by": "edge1", "size": 321}
    assert peek(b"short") == {"unreadable": "truncated"}


def test_the_sensor_window_keeps_the_newest_readings_and_shows_a_tenant_only_its_sensors() -> None:
    Series = list[dict[str, Any]]

    async def run() -> tuple[Series, Series]:
        bus = MemoryBus()
        feed = SensorFeed(SimpleNamespace(bus=bus))  # type: ignore[arg-type]
        await feed.ensure_started()
        await feed.ensure_started()  # once per connection
        for i in range(POINTS + 5):
            body = {"ts": 1000.0 + i, "value": float(i), "unit": "ppm"}
            await bus.send("sensors.edge1.room1.co2", json.dumps(body).encode())
        await bus.send("sensors.edge1.room1.temperature", b"21.5")
        await bus.send("sensors.edge1.room1.temperature", b"not json")  # ignored
        await bus.send("sensors.edge1.room1.temperature", b'{"value": "warm"}')  # ignored
        for _ in range(50):
            if len(feed.series) == 2:
                break
            await asyncio.sleep(0.01)
        devices = {"devices": [{"kind": "sensor", "node": "edge1", "location": "room1",
                                "type": "temperature", "topic": None}]}  # fmt: skip
        everything = feed.snapshot(lambda key: True)
        assert feed.snapshot(_sensor_filter({"devices": []})) == []
        visitor = feed.snapshot(_sensor_filter(devices))
        return everything, visitor

    everything, visitor = asyncio.run(run())
    co2 = next(s for s in everything if s["type"] == "co2")
    assert len(co2["points"]) == POINTS and co2["points"][-1] == [1000.0 + POINTS + 4, POINTS + 4]
    assert co2["unit"] == "ppm"
    assert [(s["type"], s["points"][0][1]) for s in visitor] == [("temperature", 21.5)]


def test_the_console_calls_only_v1_routes() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="only /v1 routes"):
        asyncio.run(call(app, "GET", "/metrics", token="t" * 10))
