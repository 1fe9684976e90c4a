"""``first_room``: a node holds rooms roomK..roomK+n-1 of the testbed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fades.broker import SQLiteConnector
from fades.errors import DatasetError
from fades.testbed import LiveOffice, generate_office, iter_office, populate, room_names

MONDAY = datetime(2024, 3, 4, tzinfo=UTC)


def test_room_names_start_at_first_room() -> None:
    assert room_names(2, 3) == ["room3", "room4"]
    assert room_names(3) == ["room1", "room2", "room3"]
    with pytest.raises(DatasetError, match="first_room"):
        room_names(2, 0)


def test_a_room_reads_the_same_whichever_rooms_are_generated_with_it() -> None:
    every = {s.device: s for s in generate_office(1, 60.0, seed=5, start=MONDAY)}
    part = generate_office(1, 60.0, seed=5, start=MONDAY, rooms=2, first_room=4)
    assert {s.location for s in part} == {"room4", "room5"}
    for s in part:
        assert np.array_equal(s.ts, every[s.device].ts)
        assert np.array_equal(s.value, every[s.device].value)
    assert {p.location for p in iter_office(0.1, 60.0, rooms=1, first_room=7)} == {"room7"}


def test_populate_writes_only_the_nodes_rooms(tmp_path: Path) -> None:
    store = SQLiteConnector(tmp_path / "r.db")
    n = populate(store, 0.05, 60.0, seed=1, start=MONDAY, rooms=2, first_room=3)
    assert n == store.count() > 0
    assert {s["location"] for s in store.sensors()} == {"room3", "room4"}
    store.close()


def test_live_values_are_deterministic_and_follow_the_models() -> None:
    a, b = LiveOffice(2, 3, seed=4), LiveOffice(2, 3, seed=4)
    other = LiveOffice(2, 3, seed=5)
    noon = datetime(2024, 3, 5, 12, 30, tzinfo=UTC).timestamp()  # a Tuesday
    night = datetime(2024, 3, 5, 2, 0, tzinfo=UTC).timestamp()
    for room, st in a.devices():
        assert a.value(room, st, noon + 0.5) == b.value(room, st, noon + 0.5)
    assert any(
        a.value(r, st, noon + 0.5) != other.value(r, st, noon + 0.5) for r, st in a.devices()
    )
    assert a.devices()[0] == ("room3", "humidity") and len(a.devices()) == 14
    # daylight and heating: a working day's afternoon is brighter and warmer than the night
    day_light = np.mean([a.value("room3", "light", noon + 60 * i) for i in range(60)])
    night_light = np.mean([a.value("room3", "light", night + 60 * i) for i in range(60)])
    assert day_light > night_light + 50
    with pytest.raises(DatasetError, match="unknown room"):
        a.value("room1", "light", noon)
