"""The data of the edge-vs-cloud experiment (:mod:`fades.bench.locality`): the node's
readings, the payload sizes calibrated against the node's own broker, and the function that
reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fades.errors import FabricError

TENANT = "facilities"  # the tenant LocalCluster's first token belongs to

#: Sensors the tasks read (one data operation each, ``last: N``), all in one room.
SENSORS = ("temperature", "humidity", "co2")

ROOM = "room1"

TESTBED_RATE_S = 5.0

FUNCTION_SRC = '''"""Min, max, mean and count of every sensor stream the task selected."""


def main(data, params):
    out = {}
    for name, ds in data.items():
        n = len(ds)
        if n == 0:
            out[name] = {"count": 0}
            continue
        lo = hi = ds.values[0]
        total = 0.0
        for v in ds.values:
            if v < lo:
                lo = v
            elif v > hi:
                hi = v
            total += v
        out[name] = {"min": lo, "max": hi, "mean": total / n, "count": n}
    return out
'''


@dataclass
class Payload:
    """One payload size: how many readings per sensor give a blob of ``target_bytes``."""

    target_mbit: float
    target_bytes: int
    per_sensor: int
    blob_bytes: int

    @property
    def readings(self) -> int:
        return self.per_sensor * len(SENSORS)

    def ops(self) -> list[dict[str, Any]]:
        return [
            {"name": s, "select": {"location": ROOM, "sensor_type": s, "last": self.per_sensor}}
            for s in SENSORS
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_mbit": self.target_mbit,
            "target_bytes": self.target_bytes,
            "blob_bytes": self.blob_bytes,
            "blob_mbit": self.blob_bytes * 8 / 1e6,
            "readings": self.readings,
            "readings_per_sensor": self.per_sensor,
        }


def make_node_data(path: Path, max_mbit: float) -> int:
    """Write enough testbed readings into ``path`` (SQLite) for a ``max_mbit`` blob."""
    from fades.broker import SQLiteConnector
    from fades.testbed import populate

    per_sensor = max(2000, max_mbit * 1e6 / 8 / 22 / len(SENSORS))  # 22 B per FDS1 reading
    days = math.ceil(per_sensor * 1.1 * TESTBED_RATE_S / 86_400 * 10) / 10
    store = SQLiteConnector(path)
    try:
        return populate(store, days, TESTBED_RATE_S, seed=3, rooms=1, sensor_types=SENSORS)
    finally:
        store.close()


def calibrate(db: Path, sizes_mbit: list[float]) -> list[Payload]:
    """Readings per sensor for each target blob size, measured with the node's own broker."""
    from fades.broker import DataBroker, SQLiteConnector
    from fades.sandbox.wire import encode
    from fades.task import DataOp

    store = SQLiteConnector(db)
    broker = DataBroker({"sqlite": store})

    def blob(per_sensor: int) -> int:
        p = Payload(0, 0, per_sensor, 0)
        ops = [DataOp.model_validate(o) for o in p.ops()]
        datasets, _ = broker.fetch(TENANT, ops)
        if sum(len(d) for d in datasets.values()) != p.readings:
            raise FabricError(f"the node holds fewer than {per_sensor} readings per sensor")
        return len(encode(datasets, {}))

    try:
        b1, b2 = blob(500), blob(1000)
        per_reading = (b2 - b1) / 500
        base = b1 - 500 * per_reading
        out = []
        for mbit in sizes_mbit:
            target = int(mbit * 1e6 / 8)
            n = max(1, round((target - base) / per_reading))
            out.append(Payload(mbit, target, n, blob(n)))
        return out
    finally:
        broker.close()
        store.close()
