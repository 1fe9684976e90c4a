"""The ingest's caps on names, sensor count and error text (each refusal names the limit)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fades.broker import SQLiteConnector
from fades.sensors import ingest
from fades.sensors.ingest import BadReading, Ingestor


def _ingestor(tmp_path: Path) -> Ingestor:
    from fades.bus.memory import MemoryBus

    return Ingestor(MemoryBus(), SQLiteConnector(tmp_path / "r.db"), "edge1")


def test_long_names_are_refused_with_the_limit(tmp_path: Path) -> None:
    ing = _ingestor(tmp_path)
    now = time.time()
    with pytest.raises(BadReading, match="longer than 64 characters"):
        ing.parse("sensors.edge1." + "l" * 65 + ".temperature", b"1.0", now)
    with pytest.raises(BadReading, match="'device' is longer than 128"):
        ing.parse("sensors.edge1.r.t", json.dumps({"value": 1, "device": "d" * 129}).encode(), now)
    with pytest.raises(BadReading, match="'unit' is longer than 32"):
        ing.parse("sensors.edge1.r.t", json.dumps({"value": 1, "unit": "u" * 33}).encode(), now)
    # a good reading afterwards is taken
    assert ing.parse("sensors.edge1.r.t", b"2.5", now)[3] == 2.5


def test_new_sensors_beyond_the_cap_are_refused_known_ones_still_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "MAX_SENSORS", 3)
    ing = _ingestor(tmp_path)
    now = time.time()
    batch = [(f"sensors.edge1.room{i}.temperature", b"1.0", now) for i in range(5)]
    batch.append(("sensors.edge1.room0.temperature", b"2.0", now))
    assert ing._write(batch) == 4  # room0..room2, and room0 again
    assert ing.stats["rejected"] == 2
    assert "has 3 sensors (at most 3)" in ing.stats["last_error"]


def test_last_error_is_cut(tmp_path: Path) -> None:
    ing = _ingestor(tmp_path)
    ing._write([("sensors.edge1.r.t", json.dumps({"value": "x" * 100_000}).encode(), 1.0)])
    assert len(ing.stats["last_error"]) <= ingest.MAX_ERROR_CHARS


def test_a_huge_payload_is_refused_before_it_is_buffered(tmp_path: Path) -> None:
    import asyncio

    ing = _ingestor(tmp_path)
    big = json.dumps({"value": 1.0, "pad": "x" * 1_000_000}).encode()
    asyncio.run(ing._take("sensors.edge1.r.t", big))
    assert ing.pending == 0 and ing.stats["rejected"] == 1
    assert "1,000,025 bytes refused (a reading is at most 4,096)" in ing.stats["last_error"]
    asyncio.run(ing._take("sensors.edge1.r.t", b"21.5"))  # a good one afterwards is taken
    assert ing.pending == 1


def test_the_backlog_is_bounded_by_payload_bytes_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    monkeypatch.setattr(ingest, "MAX_PENDING_BYTES", 10_000)
    ing = _ingestor(tmp_path)
    payload = json.dumps({"value": 1.0, "device": "d" * 100}).encode()

    async def go() -> int:
        for _ in range(200):  # ~24 KB: over the 10 KB budget, under the count
            await ing._take("sensors.edge1.r.temperature", payload)
        taken = ing.stats["received"]
        written = await ing.flush()
        await ing._take("sensors.edge1.r.temperature", payload)  # room again after a write
        assert ing.stats["received"] == taken + 1
        return written

    written = asyncio.run(go())
    assert written == 10_000 // len(payload)
    assert ing.stats["rejected"] == 200 - written
    assert "ingest backlog full (10,000 bytes of payloads)" in ing.stats["last_error"]


def test_a_bad_sensor_cap_in_the_environment_falls_back_to_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FADES_INGEST_MAX_SENSORS", "many")
    assert ingest._env_count("FADES_INGEST_MAX_SENSORS", 1000) == 1000
    assert "FADES_INGEST_MAX_SENSORS='many' is not a positive whole number" in caplog.text
