"""A selection that matches nothing says which location or sensor type the node does not
hold, and the nearest ones it does (only those the tenant may read), from each store's list
of (location, sensor type) kept as readings arrive; the node then serves the next task.

Real SQLite, real node (real wasmtime) for the end-to-end case.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fades.broker import AccessPolicy, DataBroker, MemoryConnector, SQLiteConnector
from fades.broker.base import Dataset
from fades.broker.explain import why_empty
from fades.broker.policy import TenantRule
from fades.task import DataOp

KEYS = {("kitchen", "temperature"), ("kitchen", "humidity"), ("hall", "co2")}
#: a tenant that may read everything
ALL = TenantRule(locations=None, sensor_types=None)


def op(**select: Any) -> DataOp:
    return DataOp.model_validate({"name": "t", "select": select})


def test_an_unknown_location_is_named_with_the_nearest_known() -> None:
    why = why_empty(op(location="kitchn"), KEYS, ALL)
    assert why == "location 'kitchn' is not on this node (nearest: 'kitchen')"
    why = why_empty(op(location="zzz", sensor_type="tempreature"), KEYS, ALL)
    assert why is not None and "\n" not in why
    assert "location 'zzz' is not on this node (it holds 'hall', 'kitchen')" in why
    assert "sensor type 'tempreature' is not on this node (nearest: 'temperature')" in why


def test_a_tenant_that_may_read_nothing_is_told_nothing() -> None:
    assert why_empty(op(location="kitchn"), KEYS, None) is None


def test_known_names_without_a_sensor_having_both_say_so() -> None:
    why = why_empty(op(location="hall", sensor_type="humidity"), KEYS, ALL)
    assert why == "no 'humidity' sensor at 'hall' on this node (sensor types there: 'co2')"
    # all names known and a sensor has them: the time window or device selected nothing
    assert why_empty(op(location="kitchen", sensor_type="humidity"), KEYS, ALL) is None


def test_only_what_the_tenant_may_read_is_offered() -> None:
    policy = AccessPolicy.from_mapping(
        {"tenants": {"ops": {"locations": ["kitchen", "kitchn2"], "sensor_types": "*"}}}
    )
    why = why_empty(op(location="kitchn2"), KEYS, policy.rule("ops"))
    assert why is not None and "hall" not in why and "'kitchen'" in why


def test_the_sqlite_store_lists_sensors_as_readings_arrive_and_are_cleared(
    tmp_path: Path,
) -> None:
    with SQLiteConnector(tmp_path / "r.db") as store:
        assert store.sensor_keys() == set()
        store.add(1.0, 2.0, "temperature", "C", "kitchen", "k-t")
        store.add(1.0, 2.0, "co2", "ppm", "hall", "h-c")
        assert store.sensor_keys() == {("kitchen", "temperature"), ("hall", "co2")}
        store.clear(location="hall")
        assert store.sensor_keys() == {("kitchen", "temperature")}


def test_the_memory_store_keeps_its_list_as_readings_arrive() -> None:
    mem = MemoryConnector()
    mem.add(1.0, 2.0, "temperature", "C", "kitchen", "k-t")
    mem.extend(Dataset.from_records([2.0], [3.0], ["co2"], ["hall"], ["h-c"]))
    assert mem.sensor_keys() == {("kitchen", "temperature"), ("hall", "co2")}
    broker = DataBroker({"sqlite": mem})
    assert broker.explain_empty("anyone", op(location="hal")) == (
        "location 'hal' is not on this node (nearest: 'hall')"
    )
    assert broker.explain_empty("anyone", op(location="hall")) is None


def test_a_connector_without_a_list_or_failing_to_give_one_explains_nothing() -> None:
    class Broken(MemoryConnector):
        def sensor_keys(self) -> set[tuple[str, str]]:
            raise OSError("disk gone")

    assert DataBroker({"sqlite": Broken()}).explain_empty("a", op(location="x")) is None


COUNT = """
def main(data, params):
    return {name: len(ds) for name, ds in data.items()}
"""


def test_a_node_names_the_unknown_location_and_serves_the_next_task(
    prepare_home: Callable[..., Path], open_node: Any
) -> None:
    orc = open_node(prepare_home(functions={"count": COUNT})).orchestrator

    def task(select: dict[str, Any]) -> dict[str, Any]:
        return {
            "credentials": {"tenant": "facilities"},
            "data": [{"name": "t", "select": select}],
            "function": {"artifact": "count", "memory_mib": 32},
        }

    rec = orc.run(task({"location": "rom1", "last": 5}), timeout=60)
    assert rec.status == "failed" and rec.error_kind == "NoData", rec
    err = rec.error or ""
    assert "t: location 'rom1' is not on this node (nearest: 'room1'" in err, err
    assert "allow_empty" in err and "\n" not in err
    rec = orc.run(task({"location": "room1", "sensor_type": "temprature", "last": 5}), timeout=60)
    assert "sensor type 'temprature' is not on this node (nearest: 'temperature')" in (
        rec.error or ""
    ), rec
    ok = orc.run(task({"location": "room1", "last": 5}), timeout=60)
    assert ok.status == "done" and ok.result == {"t": 5}, ok
