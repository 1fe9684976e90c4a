"""A migration's target must hold the data the task reads (else every invocation there would
fail with NoData): refused before anything moves."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from fades.controller.migrate import check_holds
from fades.errors import MigrationFailed
from fades.fabric.protocol import DataHeld, NodeInfo

TASK: dict[str, Any] = {
    "credentials": {"tenant": "a", "task_id": "c1"},
    "data": [{"name": "t", "select": {"location": "room1", "sensor_type": "temperature"}}],
    "function": {"artifact": "counter", "mode": "persistent", "period_s": 1, "state": {}},
}


def ctl_with(**nodes: list[str]) -> Any:
    infos = {
        name: SimpleNamespace(
            info=NodeInfo(
                name=name,
                data=[
                    DataHeld(connector="sqlite", location=r, sensor_type="temperature", rows=10)
                    for r in rooms
                ],
            )
        )
        for name, rooms in nodes.items()
    }
    return SimpleNamespace(registry=SimpleNamespace(get=infos.get))


def test_a_target_without_the_tasks_data_is_refused_naming_it() -> None:
    ctl = ctl_with(edge1=["room1"], edge3=["room3"])
    with pytest.raises(MigrationFailed, match=r"node 'edge3' does not hold data op 't'"):
        check_holds(ctl, "edge3", TASK)
    check_holds(ctl, "edge1", TASK)  # a holder is fine
