"""Hostile sensor readings must not take a node off the registry (its heartbeat must fit)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.fabric.test_agent import fabric, registry_entry, run, running_agent
from tests.waiting import await_until as wait_for

from fades.broker import SQLiteConnector
from fades.fabric import EmbeddedNats
from fades.node.entryfit import MAX_ENTRY_BYTES
from fades.sensors.ingest import MAX_ERROR_CHARS


def test_one_huge_bad_reading_does_not_stop_the_heartbeat(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    pytest.importorskip("fades.sensors.ingest")
    home = prepare_home("n1")

    async def main() -> None:
        async with (
            fabric(nats_server) as (nc, js, _),
            running_agent(home, nats_server, ingest=True),
        ):
            # a value the ingest refuses and used to quote whole into stats["last_error"]:
            # the registry entry then exceeded the 1 MiB message limit on every heartbeat
            bad = json.dumps({"value": "x" * (nats_server.max_payload - 2000)}).encode()
            await nc.publish("sensors.edge1.room9.temperature", bad)
            await nc.flush()

            async def refused_and_beating() -> bool:
                info = await registry_entry(js, "edge1")
                return info.stats.get("rejected") == 1

            await wait_for(refused_and_beating, 20, "the rejection in the registry entry")
            info = await registry_entry(js, "edge1")
            assert len(info.stats["last_error"]) <= MAX_ERROR_CHARS
            assert "bytes refused (a reading is at most" in info.stats["last_error"]
            # a good reading afterwards lands and shows up
            good = {"ts": time.time(), "value": 21.5}
            await nc.publish("sensors.edge1.room9.temperature", json.dumps(good).encode())
            await nc.flush()

            async def landed() -> bool:
                info = await registry_entry(js, "edge1")
                return any(d.location == "room9" and d.rows == 1 for d in info.data)

            await wait_for(landed, 20, "the good reading in the registry entry")

    run(main())


def test_a_node_holding_thousands_of_locations_still_heartbeats(
    nats_server: EmbeddedNats, prepare_home: Callable[..., Path]
) -> None:
    home = prepare_home("n1")
    store = SQLiteConnector(home / "readings.db")
    n = 8000  # ~170 bytes each in the entry: ~1.4 MB, over the 1 MiB message limit
    locs = [f"loc{i:05d}-" + "l" * 50 for i in range(n)]
    store.write_columns([time.time()] * n, [1.0] * n, "temperature", locs, "d", "C")
    store.close()

    async def main() -> None:
        async with fabric(nats_server) as (_, js, _r), running_agent(home, nats_server):

            async def beating() -> bool:
                try:
                    info = await registry_entry(js, "edge1")
                except Exception:
                    return False
                return info.seq >= 3

            await wait_for(beating, 30, "three heartbeats of edge1")
            info = await registry_entry(js, "edge1")
            assert len(info.encode()) <= MAX_ENTRY_BYTES
            # the testbed's own rooms (most rows) are kept; the one-row locations go first
            assert any(d.location == "room1" for d in info.data)
            assert len(info.data) < n

    run(main())
