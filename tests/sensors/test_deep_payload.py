"""A sensor message whose JSON is nested 100,000 levels deep is one rejected reading with a
one-line reason; the good readings of the same batch still land (real NATS, real SQLite).
A packet capture with such a line is refused naming the line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tests.sensors.test_ingest import until, with_ingest

from fades.broker import SQLiteConnector
from fades.broker.connectors.packets import read_capture
from fades.errors import ConnectorError
from fades.fabric import EmbeddedNats
from fades.sensors.ingest import Ingestor
from fades.task import Selector

#: nested past Python's recursion limit (1,000), within a reading's 4,096 bytes
DEEP = b"[" * 2_000 + b"]" * 2_000


def test_a_deep_payload_is_rejected_and_its_batch_lands(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    store = SQLiteConnector(tmp_path / "readings.db")
    now = time.time()

    async def body(nc: Any, ingest: Ingestor) -> None:
        await nc.publish("sensors.edge1.room1.co2", DEEP)
        await nc.publish("sensors.edge1.room1.co2", json.dumps({"ts": now, "value": 600}).encode())
        await nc.flush()
        await until(lambda: ingest.stats["written"] + ingest.stats["rejected"] >= 2, 60)

    ingest = with_ingest(nats_server, store, body, batch_s=0.5)  # both in one batch
    assert ingest.stats["rejected"] == 1 and ingest.stats["written"] == 1, ingest.stats
    err = str(ingest.stats["last_error"])
    assert "nested too deeply" in err and "\n" not in err
    co2 = store.fetch(Selector(location="room1", sensor_type="co2"))
    assert co2.value.tolist() == [600.0]
    store.close()


def test_a_deep_line_in_a_packet_capture_is_named(tmp_path: Path) -> None:
    cap = tmp_path / "cap.jsonl"
    cap.write_bytes(DEEP + b"\n")
    with pytest.raises(ConnectorError, match=r"line 1.*nested too deeply"):
        read_capture(cap)
